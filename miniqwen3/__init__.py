"""miniqwen3: Qwen3 and Qwen3-MoE from scratch in NumPy."""

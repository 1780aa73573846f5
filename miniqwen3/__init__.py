"""miniqwen3: Qwen3 and Qwen3-MoE from scratch in NumPy, with Numba kernels for the hot paths."""
from .budget import STOP_TEXT, BudgetState, ThinkingBudget
from .chat import ChatError, prompt_for_generation, render_chat, resolve_thinking
from .config import ConfigError, Qwen3Config
from .generate import GenerationResult, Sampling, generate, stream
from .hub import ModelNotFoundError, load
from .model import KVCache, Model
from .tokenizer import StreamDecoder, Tokenizer, TokenizerError
from .routing import RouterRecord, RoutingTrace
from .weights import CheckpointError

__version__ = "0.1.0"

"""miniqwen3: Qwen3 and Qwen3-MoE from scratch in NumPy, with Numba kernels for the hot paths."""
import os as _os

# OpenBLAS's threads spin for 2^28 cycles after each BLAS call before they sleep (OPENBLAS_THREAD_TIMEOUT, read
# once, when NumPy first loads OpenBLAS). With few cores they hold the cores that the Numba kernels called next
# need: a Qwen3-30B-A3B prefill of 64 tokens took 11.2 s with the default and 6.9 s with 2^4 cycles on 2 cores
# (benchmarks/blas_spin.py, benchmarks/README.md). Set before the modules below import NumPy; a value set by the user wins. A program that
# imported NumPy before miniqwen3 should set it itself (`OPENBLAS_THREAD_TIMEOUT=4`).
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

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

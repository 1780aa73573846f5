"""miniqwen3: Qwen3 and Qwen3-MoE from scratch in NumPy, with Numba kernels for the hot paths."""
from .config import ConfigError, Qwen3Config
from .hub import ModelNotFoundError, load
from .model import KVCache, Model
from .trace import RouterRecord, RoutingTrace
from .weights import CheckpointError

__version__ = "0.1.0"

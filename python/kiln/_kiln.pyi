"""Type stubs of kiln._kiln, the native module (the kiln package wraps it; use that)."""

from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

Dim = Union[int, str]
IoInfo = Tuple[str, str, List[Dim]]

def version() -> str: ...
def cuda_available() -> bool: ...

class Session:
    def run(self, inputs: Sequence[object]) -> List[object]: ...
    def run_device(self, inputs: Sequence[object], stream: int, framework: str) -> List[object]: ...

class Engine:
    def save(self, path: str) -> None: ...
    @property
    def inputs(self) -> List[IoInfo]: ...
    @property
    def outputs(self) -> List[IoInfo]: ...
    @property
    def device(self) -> str: ...
    def inspect_json(self) -> str: ...
    def session(self) -> Session: ...

def build(
    model: Union[str, bytes],
    device: str,
    fp16: bool,
    bf16: bool,
    shapes: Dict[str, List[int]],
    profiles: Dict[str, Tuple[List[int], List[int], List[int]]],
    timing_cache: str,
    disable_passes: List[str],
    enable_passes: List[str],
    progress: Optional[Callable[[str, float], None]],
) -> Tuple[Engine, List[str]]: ...
def load(path: str) -> Engine: ...
def bench(
    engine: Engine,
    given: List[Tuple[str, object]],
    shapes: Dict[str, List[int]],
    warmup: int,
    iterations: int,
    duration: float,
    threads: int,
    profile: bool,
    transfers: bool,
    graphs: bool,
    streams: int,
    seed: int,
    lo: int,
    hi: int,
) -> str: ...

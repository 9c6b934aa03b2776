"""Name → (spec class, builder) registries for tasks and models, so one `build` serves every config.

A model file registers itself with::

    @MODELS.register("lstm", LSTMSpec)
    def build_lstm(spec: LSTMSpec, info: TaskInfo) -> nn.Module: ...

and a task file with ``@TASKS.register("adding", AddingSpec)`` on a function returning a Task.
Importing `seqlab.models` and `seqlab.data` imports every family, which fills the registries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

from seqlab.config import Spec

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    spec_cls: type[Spec]
    builder: Callable[..., T]


class Registry(Generic[T]):
    """A named family of builders, each with the spec class that validates its config."""

    def __init__(self, kind: str, loader: str) -> None:
        self.kind = kind
        self._loader = loader
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, spec_cls: type[Spec]) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(builder: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(spec_cls, builder)
            return builder

        return decorator

    def _load(self) -> None:
        import importlib

        importlib.import_module(self._loader)

    def specs(self) -> dict[str, type[Spec]]:
        self._load()
        return {name: entry.spec_cls for name, entry in self._entries.items()}

    def build(self, spec: Spec, *args: Any) -> T:
        self._load()
        return self._entries[spec.name].builder(spec, *args)

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)


MODELS: Registry[Any] = Registry("model", "seqlab.models")
TASKS: Registry[Any] = Registry("task", "seqlab.data")

"""Name → (spec class, class) registries for models and tasks, so one `build` serves every config.

A model file registers its class with the spec class that validates its config section::

    @MODELS.register("lstm", LSTMSpec)
    class LSTMModel(nn.Module):
        def __init__(self, spec: LSTMSpec, info: TaskInfo) -> None: ...

and `MODELS.build(spec, info)` is `LSTMModel(spec, info)`. The decorator takes any callable with those
arguments, so a function building the model (or, for `TASKS`, a function of (spec, seed) returning a Task)
registers the same way. Each family registers itself when imported; importing `seqlab.models` and
`seqlab.data` imports every family (`seqlab.config.config_from_dict` does, to check a config's sections).
This module imports nothing else of seqlab, so every family and the config can import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class Spec(BaseModel):
    """Base of every task and model spec: a `name` plus that family's own fields, no unknown keys."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str


@dataclass(frozen=True)
class Entry(Generic[T]):
    spec_cls: type[Spec]
    make: Callable[..., T]  # the registered class (or builder function), called as make(spec, *args)


class Registry(Generic[T]):
    """A named family of classes (or builders), each with the spec class that validates its config."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, spec_cls: type[Spec]) -> Callable[[F], F]:
        """Decorate a class (or builder function) taking (spec, *args); it is returned unchanged."""

        def decorator(make: F) -> F:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(spec_cls, make)
            return make

        return decorator

    def specs(self) -> dict[str, type[Spec]]:
        return {name: entry.spec_cls for name, entry in self._entries.items()}

    def build(self, spec: Spec, *args: Any) -> T:
        return self._entries[spec.name].make(spec, *args)

    def names(self) -> list[str]:
        return sorted(self._entries)


MODELS: Registry[Any] = Registry("model")
TASKS: Registry[Any] = Registry("task")

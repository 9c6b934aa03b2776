"""The registry builds a registered class or builder function with (spec, *args), and refuses a name twice."""

from __future__ import annotations

import pytest

from seqlab.registry import Registry, Spec


class ToySpec(Spec):
    name: str = "toy"
    width: int = 3


def test_a_class_and_a_builder_function_register_alike() -> None:
    registry: Registry[object] = Registry("toy")

    @registry.register("toy", ToySpec)
    class Toy:
        def __init__(self, spec: ToySpec, size: int) -> None:
            self.width, self.size = spec.width, size

    @registry.register("doubled", ToySpec)
    def doubled(spec: ToySpec, size: int) -> Toy:
        return Toy(spec, 2 * size)

    built = registry.build(ToySpec(), 5)
    assert isinstance(built, Toy) and (built.width, built.size) == (3, 5)
    assert registry.build(ToySpec(name="doubled"), 5).size == 10
    assert registry.names() == ["doubled", "toy"] and registry.specs()["toy"] is ToySpec
    assert isinstance(Toy(ToySpec(), 1), Toy)  # the decorator returns the class itself
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("toy", ToySpec)(Toy)

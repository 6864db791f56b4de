"""Golden reference models: pure Python, bit-exact specifications of every engine."""

__all__: list[str] = []

"""One context-manager protocol for everything edgeveil opens and must close.

class Registry(Closing):
    def close(self) -> None: ...

with Registry.open(path) as reg:   # close() runs at the end, also on an exception
    ...
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self


class Closing(ABC):
    """`with obj:` returns obj and calls its close() on the way out; errors propagate."""

    @abstractmethod
    def close(self) -> None:
        """Release what the object holds; safe to call more than once."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

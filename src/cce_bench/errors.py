"""One exception family. The CLI turns any of these into one red line and exit code 1."""


class CceBenchError(Exception):
    """Base class: a problem the user can fix; the message says how."""


class BudgetTooSmall(CceBenchError, ValueError):
    """The parameter budget cannot hold the smallest configuration of a method."""

    def __init__(self, method: str, num_params: int, minimum: int, detail: str = ""):
        self.method, self.num_params, self.minimum = method, num_params, minimum
        where = f" ({detail})" if detail else ""
        self.detail = detail
        super().__init__(
            f"budget {num_params} is too small for {method}{where}; use at least {minimum}"
        )

    def in_both_units(self, dim: int) -> str:
        """The message with budgets as parameters and as parameters per dimension (a sweep's
        two units), so it speaks the unit the budget was asked in."""
        where = f" ({self.detail})" if self.detail else ""
        need = -(-self.minimum // dim)
        return (f"budget {self.num_params:,} params ({self.num_params / dim:g} ppd at dim {dim}) "
                f"is too small for {self.method}{where}; use at least {self.minimum:,} params "
                f"({need:,} ppd)")


class UnknownName(CceBenchError, ValueError):
    """A method, dataset or backend name that is not registered."""

    def __init__(self, kind: str, name: str, known: list[str]):
        self.kind, self.name, self.known = kind, name, known
        super().__init__(f"unknown {kind} '{name}'; choose from: {', '.join(known)}")


class ConfigError(CceBenchError, ValueError):
    """A run or sweep setting that is out of range or inconsistent."""


class DatasetError(CceBenchError, RuntimeError):
    """A dataset that is missing, corrupt, or cannot be built."""


class ResultsError(CceBenchError, OSError):
    """A results file or folder that cannot be read or written."""


class IdError(CceBenchError, IndexError):
    """Ids an embedding cannot look up: not integers, or outside [0, vocab)."""

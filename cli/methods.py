"""`cce-bench methods`: the registered embedding methods, one line each."""

from __future__ import annotations

from cce_bench.embeddings import methods as registered

from .common import console, friendly_errors


@friendly_errors
def methods() -> None:
    """List every embedding method: name, family, what it computes, paper."""
    infos = registered()
    name_w = max(len("method"), *(len(i.name) for i in infos))
    family_w = max(len("family"), *(len(i.family) for i in infos))
    console.print(f"[bold]{'method':<{name_w}}  {'family':<{family_w}}  what it computes; paper")
    for info in infos:
        # soft_wrap: one line per method however narrow the terminal; never cut.
        console.print(f"{info.name:<{name_w}}  {info.family:<{family_w}}  {info.description}; "
                      f"{info.paper}", soft_wrap=True, highlight=False, markup=False)

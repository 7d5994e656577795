"""`python -m minicl.convert ORIGINAL_DIR OUT_DIR`: an original run directory of the paper's code
(Garg et al.'s released models) written once as a minicl run directory.

Every command that takes `run=` also reads an original run directory as it is (minicl.rundir
converts its config and GPT2Model weights on the fly); converting it once saves doing so each time.
"""

import sys
from pathlib import Path

from minicl.common import save_atomic
from minicl.rundir import STATE, read_original_run


def convert_run(original_dir: str | Path, out_dir: str | Path) -> Path:
    """Write an original run directory as a minicl one (state.pt without optimiser state)."""
    state = read_original_run(Path(original_dir))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_atomic(state, out / STATE)
    return out / STATE


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        raise SystemExit("usage: python -m minicl.convert ORIGINAL_RUN_DIR OUT_DIR")
    print(f"wrote {convert_run(*argv)}")


if __name__ == "__main__":
    main()

"""``python -m sidecar_runtime`` is the ``sidecar-run`` command."""

from ._cli import main

if __name__ == "__main__":
    main()

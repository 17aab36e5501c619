"""Entry point: ``python runner.py COMMAND [options]`` (same as the ``cpo`` console script)."""

from cpo.engine.cli import entrypoint

if __name__ == "__main__":
    entrypoint()

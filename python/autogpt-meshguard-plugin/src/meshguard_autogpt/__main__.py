"""``python -m meshguard_autogpt [AutoGPT options]``: patch AutoGPT, then start it.

The arguments are AutoGPT's own (``--continuous``, ``--ai-settings``, …). Like AutoGPT, run it from
the folder that holds AutoGPT's ``.env`` and workspace.
"""

import sys


def main() -> None:
    """Patches AutoGPT's command execution and runs AutoGPT's command line."""
    from meshguard_autogpt import patch_autogpt

    patch_autogpt()
    from autogpt.cli import main as autogpt_main

    autogpt_main(prog_name="meshguard_autogpt", args=sys.argv[1:])


if __name__ == "__main__":
    main()

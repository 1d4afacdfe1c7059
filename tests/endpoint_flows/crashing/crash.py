import os
import sys
import traceback

from promptflow.core import tool

if os.environ.get("CRASH_ON_START"):  # an instance dies at start with a long traceback
    try:
        raise RuntimeError("the model files are missing: " + "/very/long/path" * 40)
    except RuntimeError:
        traceback.print_exc()
    sys.exit(3)


@tool
def crash(text: str) -> str:
    return text

"""Print each test executable that `cargo test --no-run --message-format=json` built.

Reads cargo's JSON messages on stdin; shared by the emulation scripts beside it.
"""

import json
import sys

for line in sys.stdin:
    message = json.loads(line)
    if (
        message.get("reason") == "compiler-artifact"
        and message.get("executable")
        and message["profile"]["test"]
    ):
        print(message["executable"])

#!/usr/bin/env python3
"""Copies the option list of `agentwire --help` into docs/operations.md (the
block between the first ``` fence after 'Configuration' and its closing fence).
tests/e2e/docs.test.mjs fails when the two disagree; run this after changing
an option:  python3 scripts/update-options-doc.py [path/to/agentwire]"""
import pathlib
import subprocess
import sys

root = pathlib.Path(__file__).resolve().parent.parent
binary = sys.argv[1] if len(sys.argv) > 1 else str(root / "build" / "agentwire")
text = subprocess.run([binary, "--help"], capture_output=True, text=True, check=True).stdout
options = text[text.index("Options"):text.index("\nDocumentation")].strip("\n")
doc_path = root / "docs" / "operations.md"
doc = doc_path.read_text()
start = doc.index("```\nOptions")
end = doc.index("```", start + 3)
doc_path.write_text(doc[:start] + "```\n" + options + "\n" + doc[end:])
print(f"updated {doc_path.relative_to(root)}")

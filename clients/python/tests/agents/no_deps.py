"""Runs a script (argv[1], with the rest of argv) with httpx, websockets and
aiohttp impossible to import: proves the script needs the standard library only."""
import runpy
import sys

BLOCKED = {"httpx", "websockets", "aiohttp"}


class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: this must run on the standard library")
        return None


sys.meta_path.insert(0, Blocker())
script = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")

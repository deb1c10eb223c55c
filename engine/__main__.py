import signal
import sys

try:
    from engine.cli import main

    code = main(process_exit=True)
except KeyboardInterrupt:  # Ctrl-C before a command set up its own handling (while importing)
    print("interrupted", file=sys.stderr)
    code = 130
# the answer is out: a second Ctrl-C during the interpreter's teardown (torch's, ~0.5 s) must
# not print a traceback from inside it
signal.signal(signal.SIGINT, signal.SIG_IGN)
sys.exit(code)

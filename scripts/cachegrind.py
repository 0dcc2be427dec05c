#!/usr/bin/env python3
"""Compare cachegrind profiles the way docs/notes/perf.md does (sessions 18-21).

Record a profile of the 500-server proxy of bench-medium (about 4 minutes each; two can run
at once on two cores):

    valgrind --tool=cachegrind --cache-sim=yes --LL=2097152,16,64 \\
        --cachegrind-out-file=A.out target/release/fedsim run scenarios/bench-medium.toml \\
        --set rooms.servers=500 --set rooms.rooms=100 \\
        --set rooms.servers_per_room.max=300 --set duration=2d --out DIR

then:

    scripts/cachegrind.py totals A.out B.out          # Ir, D1mr, DLmr, DLmw, B against A
    scripts/cachegrind.py functions A.out B.out DLmr  # the functions that moved most
    scripts/cachegrind.py lines A.out [COUNT]         # last-level misses by source line
    scripts/cachegrind.py selftest                    # checks this script on a made-up profile

Totals leave out the functions that drop and free (names containing `drop`, `mi_free`, `_mi_`
(mimalloc's internals), `IntoIter`, `dying_next`): a run hands its world to a background thread to free, which races the process
exit, so how much of the freeing a profile holds varies from run to run.

`lines` credits each count to the source line it belongs to, inlined code included (the
profile's `fi=`/`fe=` lines), and names the function that spent most of it. Comparing single
functions between two builds is weak evidence: inlining moves counts between them.
"""

import collections
import re
import sys

FREEING = re.compile(r"drop|mi_free|_mi_|IntoIter|dying_next")
SHOWN = ("Ir", "D1mr", "DLmr", "DLmw")


class Profile:
    """Per-function and per-line counts of one cachegrind output file."""

    def __init__(self, lines):
        self.events = []
        self.functions = collections.defaultdict(lambda: collections.Counter())
        self.lines = collections.defaultdict(lambda: collections.Counter())
        self.line_functions = collections.defaultdict(collections.Counter)
        file_name = current_file = function = None
        for line in lines:
            if line.startswith("events:"):
                self.events = line.split()[1:]
            elif line.startswith("fl="):
                file_name = current_file = line[3:].strip()
            elif line.startswith(("fi=", "fe=")):
                current_file = line[3:].strip()
            elif line.startswith("fn="):
                function = line[3:].strip()
                current_file = file_name
            elif line[:1].isdigit():
                fields = line.split()
                place = (short(current_file), fields[0])
                for event, count in zip(self.events, fields[1:]):
                    count = int(count)
                    self.functions[function][event] += count
                    self.lines[place][event] += count
                    if event in ("DLmr", "DLmw"):
                        self.line_functions[place][function] += count

    def total(self, event):
        """The event's total without the dropping and freeing functions."""
        return sum(
            counts[event]
            for function, counts in self.functions.items()
            if not FREEING.search(function)
        )


def short(path):
    return path.split("/src/")[-1] if path and "/src/" in path else path


def load(path):
    with open(path, encoding="utf-8", errors="replace") as file:
        return Profile(file)


def totals(a, b):
    rows = []
    for event in SHOWN:
        before, after = a.total(event), b.total(event)
        change = (after / before - 1) * 100 if before else 0.0
        rows.append(f"{event:5} {before:>18,} {after:>18,} {change:+7.2f}%")
    return rows


def functions(a, b, event, count=25):
    names = set(a.functions) | set(b.functions)
    moved = sorted(
        (b.functions[name][event] - a.functions[name][event], name) for name in names
    )
    chosen = moved[:count] + moved[-count:] if len(moved) > 2 * count else moved
    return [f"{delta:>+14,} {name[:110]}" for delta, name in chosen if delta]


def misses_by_line(profile, count=40):
    misses = collections.Counter(
        {place: counts["DLmr"] + counts["DLmw"] for place, counts in profile.lines.items()}
    )
    total = sum(misses.values()) or 1
    rows = []
    for (file_name, line), value in misses.most_common(count):
        top = profile.line_functions[(file_name, line)].most_common(1)
        function = top[0][0] if top else "?"
        rows.append(
            f"{100 * value / total:5.2f}% {value:>12,} {file_name}:{line}  [{function[:70]}]"
        )
    return rows


SAMPLE = """events: Ir D1mr DLmr DLmw
fl=/x/src/room/a.rs
fn=fedsim::a
10 100 5 3 1
fi=/x/src/matrix/b.rs
20 50 4 2 2
fe=/x/src/room/a.rs
11 10 0 0 0
fn=core::ptr::drop_in_place<X>
30 1000 9 9 9
"""


def selftest():
    profile = Profile(SAMPLE.splitlines(keepends=True))
    assert profile.total("Ir") == 160, profile.total("Ir")  # the drop function is left out
    assert profile.total("DLmr") == 5
    assert profile.lines[("matrix/b.rs", "20")]["DLmw"] == 2  # inlined line, its own file
    assert profile.lines[("room/a.rs", "30")]["Ir"] == 1000  # back to `fl=` after `fn=`
    other = Profile(SAMPLE.replace("10 100 5 3 1", "10 80 5 1 1").splitlines(keepends=True))
    assert totals(profile, other)[0].endswith("-12.50%"), totals(profile, other)[0]
    assert functions(profile, other, "Ir") == [f"{-20:>+14,} fedsim::a"]
    assert misses_by_line(profile, 1)[0].split()[2] == "room/a.rs:30"
    print("cachegrind.py selftest: ok")


def main(args):
    if args[:1] == ["selftest"]:
        selftest()
    elif args[:1] == ["totals"] and len(args) == 3:
        print("\n".join(totals(load(args[1]), load(args[2]))))
    elif args[:1] == ["functions"] and len(args) == 4:
        print("\n".join(functions(load(args[1]), load(args[2]), args[3])))
    elif args[:1] == ["lines"] and len(args) in (2, 3):
        count = int(args[2]) if len(args) == 3 else 40
        print("\n".join(misses_by_line(load(args[1]), count)))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])

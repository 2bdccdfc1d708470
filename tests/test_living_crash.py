"""Crash safety of the living collection (issue 14): writers killed with SIGKILL at random moments and at
chosen points inside commits and merges (``scripts/crash_living.py``, its child ``scripts/_crash_child.py``).

After every kill the collection must open, be in one of the committed states (the last acknowledged one, or
the next one when the kill came after the commit point), hold every acknowledged write (each live row with
the vector written for its id and version), answer ``safe`` and ``exact`` searches as brute force over its
live rows does, take the next write, and then hold no stray file. 56 kills in all (52 by children forked
from a warm server, 4 by fresh ``subprocess.Popen`` children); the seeds are fixed. More kills, with a table
of where they landed: ``.venv/bin/python scripts/crash_living.py --kills 300``.

No model and no torch: the vectors are fixed functions of each document's id and version.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import _crash_child as child  # noqa: E402  (beside the script: not part of the package)
import crash_living  # noqa: E402

from lsr.collection import Collection  # noqa: E402


def _report(kills) -> str:
    s = crash_living.summary(kills)
    bad = [crash_living.line(k) + "".join(f"\n    {f}" for f in k.failures) for k in kills if k.failures]
    return "\n".join(bad) + "\n" + crash_living.table(s)


@pytest.mark.parametrize("seed", [11, 12])
def test_kills_at_random_moments_and_crash_points_leave_a_committed_state(tmp_path, seed):
    """26 kills per seed: about 40% after a random delay, the rest at crash points (cycling through every
    point of a commit and of a merge); each one checked as the module docstring says."""
    kills = crash_living.run_kills(tmp_path / "work", kills=26, seed=seed, n_docs=150)
    s = crash_living.summary(kills)
    print(f"\nseed {seed}\n{crash_living.table(s)}")
    assert s["failures"] == 0, _report(kills)
    assert s["kills"] == 26, _report(kills)
    # the kills landed on both sides of the commit point, inside commits and inside merges
    assert s["acked"] >= 3 and s["next"] >= 3, _report(kills)
    assert s["inside_commit"] >= 3 and s["inside_merge"] >= 2, _report(kills)
    assert len([p for p in s["by_phase"] if not p.startswith("random")]) >= 8, _report(kills)


@pytest.mark.parametrize("plan", ["commit:segment.written", "commit:commit.written", "merge:segment.written",
                                  "any:gc.base_partial", "random"])
def test_a_fresh_process_killed_at(tmp_path, plan):
    """The same with a fresh ``subprocess.Popen`` child (the crash point through ``LSR_CRASH_AT``)."""
    work = tmp_path / "work"
    work.mkdir()
    folder = work / "coll"
    start = child.build_base(folder, 120)
    kill, nxt = crash_living.kill_once(folder, work, crash_living.Fresh(work), 0, 5, start, plan=plan,
                                       delay=0.3, nth=1)
    assert kill.killed and not kill.failures, _report([kill])
    if plan != "random":
        assert kill.state == ("next" if child.POINTS[plan.split(":")[1]][1] else "acked")
    assert nxt is not None and nxt[0] > start[0]


# ----------------------------------------------------------------------------- the checks can fail


def _log(entries):
    return [json.loads(json.dumps(e)) for e in entries]


def test_the_checks_catch_a_lost_write_a_wrong_state_and_a_wrong_vector(tmp_path):
    folder = tmp_path / "coll"
    gen, state = child.build_base(folder, 30)
    c = Collection.open(folder, load_encoders=False)
    lost = {**state, "x1": "7"}  # an acknowledged document the collection does not have
    kill = crash_living.Kill(n=0, plan="random")
    assert crash_living.check_state(c, _log([{"kind": "ack", "gen": gen, "live": lost}]), kill, None) is None
    assert "1 missing ['x1']" in kill.failures[0]

    kill = crash_living.Kill(n=0, plan="commit:commit.written")  # committed: the next state is required
    entries = [{"kind": "ack", "gen": gen, "live": state}, {"kind": "intent", "op": "commit", "gen": gen + 1,
                                                            "live": lost}]
    assert crash_living.check_state(c, _log(entries), kill, "next") == state
    assert kill.state == "acked" and "must leave the next state" in kill.failures[0]

    kill = crash_living.Kill(n=0, plan="random")
    crash_living.check_vectors(c, {**state, "b3": "9"}, kill)  # b3 was written at version 0
    assert kill.failures == ["1 live rows store another vector than was written: ['b3']"]
    kill = crash_living.Kill(n=0, plan="random")
    child.install_stub(c)
    crash_living.check_vectors(c, state, kill)
    crash_living.check_search(c, kill, np.random.default_rng(0))
    assert kill.failures == []
    c.close()


def test_stray_files_are_found(tmp_path):
    folder = tmp_path / "coll"
    gen, state = child.build_base(folder, 30)
    c = Collection.open(folder, load_encoders=False)
    child.install_stub(c)
    c.add([{"id": "n1", "title": "", "text": child.text("n1", "1")}],
          vectors={"sparse": child.batch([("n1", "1")])})
    info = c.commit()
    c.close()
    assert crash_living.stray_files(folder, {info.generation}) == []
    (folder / "segments" / "s000099.tmp-0123456789ab").mkdir()
    (folder / "deletes").mkdir(exist_ok=True)
    (folder / "deletes" / "base-99.npy").write_bytes(b"x")
    (folder / f"commit-{info.generation + 1}.json.tmp-01234567").write_text("{")
    assert crash_living.stray_files(folder, {info.generation}) == [
        f"commit-{info.generation + 1}.json.tmp-01234567", "segments/s000099.tmp-0123456789ab",
        "deletes/base-99.npy"]
    assert crash_living.stray_files(folder, set())[0] == f"commit-{info.generation}.json"


# ----------------------------------------------------------------------------- what the kills found


def test_ids_of_different_lengths_delete_only_themselves(tmp_path):
    """Upserting ``b1x`` or deleting ``b2-gone`` must not delete ``b1`` / ``b2`` (ids cut to the width of a
    segment's id array before the comparison would match them)."""
    folder = tmp_path / "coll"
    child.build_base(folder, 3)
    c = Collection.open(folder, load_encoders=False)
    child.install_stub(c)
    c.add([{"id": "b1x", "title": "", "text": child.text("b1x", "1")}],
          vectors={"sparse": child.batch([("b1x", "1")])})
    c.commit()
    c.delete(["b2-gone"])
    c.commit()
    assert sorted(child.live_state(c)) == ["b0", "b1", "b1x", "b2"]
    c.close()


def test_commit_with_given_vectors_loads_no_model(tmp_path):
    """A collection without BM25 needs no tokenizer at commit: vectors given, nothing is encoded, so the
    writer must not load the SPLADE model (the stub's manifest names one that does not exist)."""
    folder = tmp_path / "coll"
    child.build_base(folder, 3)
    c = Collection.open(folder, load_encoders=False)
    c.add([{"id": "n1", "title": "", "text": child.text("n1", "1")}],
          vectors={"sparse": child.batch([("n1", "1")])})
    assert c.commit().added == 1
    c.close()

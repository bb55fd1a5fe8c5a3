"""Backoff schedule and the offline queue, run in micropython."""

import json


def run_json(mpy, code):
    return json.loads(mpy(code).strip().splitlines()[-1])


def test_backoff_doubles_to_the_cap_with_full_jitter_and_resets_when_stable(mpy):
    got = run_json(mpy, """
        import json
        from aziot.backoff import Backoff
        top = Backoff(1000, 100000, 30000, 60000, rand=lambda bits: (1 << bits) - 1)
        ceilings = []
        for _ in range(9):
            ceilings.append(top.ceiling())
            top.next_delay()
        b = Backoff(1000, 100000, 30000, 60000)
        delays = [b.next_delay() for _ in range(200)]
        spread = [Backoff(1000, 8000).next_delay() for _ in range(200)]  # a fleet's first retries
        t = Backoff(1000, 100000, 30000)
        throttled = [t.next_delay(True) for _ in range(3)]
        b.connected_for(59999)
        before = b.failures
        b.connected_for(60000)
        print(json.dumps([ceilings, max(delays) <= 100000, min(delays) >= 0, sorted(set(spread))[:3],
                          len(set(spread)), throttled, before, b.failures]))
    """)
    ceilings, below_cap, non_negative, _, distinct, throttled, before, after = got
    assert ceilings == [1000, 2000, 4000, 8000, 16000, 32000, 64000, 100000, 100000]
    assert below_cap and non_negative
    assert distinct > 150  # full jitter: 200 devices retry at 200 different moments, not in lockstep
    assert 30000 <= throttled[0] <= 31000 and 30000 <= throttled[1] <= 32000 and 30000 <= throttled[2] <= 34000
    assert (before, after) == (200, 0)


def test_queue_drops_oldest_or_refuses_newest_and_counts_each_drop(mpy):
    got = run_json(mpy, """
        import json
        from aziot.outbox import Outbox
        from aziot.errors import QueueFull
        dropped = []
        q = Outbox(3, 100, "drop-oldest", on_dropped=dropped.append)
        for i in range(5):
            q.put(str(i), b"t", b"x" * 10)
        q.put("big", b"t", b"y" * 80)          # over 100 bytes: evicts until it fits
        oldest = [m[0] for m in q.items], list(dropped), q.dropped
        n = Outbox(2, 100, "drop-newest", on_dropped=dropped.append)
        n.put("a", b"t", b"1")
        n.put("b", b"t", b"2")
        try:
            n.put("c", b"t", b"3")
        except QueueFull as e:
            err = str(e)
        try:
            n.put("huge", b"t", b"z" * 101)
        except QueueFull as e:
            err2 = str(e)
        print(json.dumps([oldest, [m[0] for m in n.items], n.dropped, err, err2, dropped[-2:]]))
    """)
    (kept, dropped, count), newest_kept, newest_count, err, err2, last = got
    assert kept == ["3", "4", "big"] and dropped == ["0", "1", "2"] and count == 3
    assert newest_kept == ["a", "b"] and newest_count == 2
    assert err == "offline queue full (2 messages, 2 bytes): message c dropped"
    assert err2 == "message huge (101 bytes) does not fit the offline queue (2 messages, 100 bytes)"
    assert last == ["c", "huge"]


def test_queue_file_survives_a_reset_and_a_torn_tail_is_counted(mpy, tmp_path):
    path = str(tmp_path / "queue.bin")
    got = run_json(mpy, """
        import json, os
        from aziot.outbox import Outbox
        q = Outbox(10, 1000, path=%r)
        q.put("m1", b"devices/d/messages/events/", b"one")
        q.put("m2", b"devices/d/messages/events/k=v", bytes(range(256)))
        q.save()
        again = Outbox(10, 1000, path=%r)     # after a reset
        loaded = [[m[0], m[1].decode(), len(m[2])] for m in again.items]
        with open(%r, "rb") as f:
            data = f.read()
        with open(%r, "wb") as f:
            f.write(data[:-10])                 # power cut in the middle of the last message
        torn = Outbox(10, 1000, path=%r)
        again.remove_first(); again.remove_first(); again.save()
        print(json.dumps([loaded, [m[0] for m in torn.items], torn.dropped, again.items == [] and
                          %r.split("/")[-1] not in os.listdir(%r)]))
    """ % (path, path, path, path, path, path, str(tmp_path)))
    assert got[0] == [["m1", "devices/d/messages/events/", 3], ["m2", "devices/d/messages/events/k=v", 256]]
    assert got[1:] == [["m1"], 1, True]


def test_the_flash_queue_appends_instead_of_rewriting_and_survives_a_reset(mpy, tmp_path):
    """100 messages queued offline one by one, then 40 sent: flash bytes written stay near what was queued
    (the old rewrite-per-message wrote the whole queue each time), and a reset reads back the rest."""
    path = str(tmp_path / "queue.bin")
    out = mpy("""
        from aziot.outbox import Outbox
        box = Outbox(200, 1 << 20, path=%r)
        for i in range(100):
            box.put("m%%d" %% i, b"devices/d/messages/events/", b"p" * 200)
            box.save()
        queued = box.bytes_written
        for i in range(40):
            box.remove_first()
            box.save()
        print("QUEUED", queued, "AFTER", box.bytes_written)
        again = Outbox(200, 1 << 20, path=%r)
        print("LOADED", len(again), again.first()[0], again.items[-1][0], again.dropped)
    """ % (path, path))
    lines = out.split("\\n") if "\\n" in out else out.splitlines()
    queued, after = int(lines[0].split()[1]), int(lines[0].split()[3])
    record = 9 + len("m99") + len("devices/d/messages/events/") + 200
    assert queued <= 100 * record * 1.1, queued  # rewriting each time: ~50 x that
    assert after - queued < 100 * record  # 40 one-byte records, and at most one compaction
    assert lines[1] == "LOADED 60 m40 m99 0"

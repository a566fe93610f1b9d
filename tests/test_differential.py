"""Differential property tests against h11 (another parser, written by others) on
generated heads and bodies: where both accept a request, both frame it the same
way; and where lilush_http accepts one, no reading of its head that a front end
may make under RFC 9110 section 5.5 frames it differently."""

import os
import re
import sys

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_properties import run

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
from fuzz import h11_reads  # noqa: E402  (h11 as a server: [(method, path, body length)], refused)

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NEXT = b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"


def lilush_reads(data):
    """What lilush_http reads: ([(method, path, body length)], refused), up to the first
    request after which the connection would not be kept alive (as h11 stops there)."""
    seen, outcome = run(data)
    out = []
    for method, _target, query, _args, _version, _headers, body, keep_alive in seen:
        out.append((method, query, len(body or b"")))
        if not keep_alive:
            break
    return out, outcome != "eof"


# -- generated requests, with the hazards of RFC 9110 section 5.5 mixed in ------------

VALUE_PIECES = [b"v", b"a b", b"\t", b"caf\xc3\xa9", b"\xff", b"1", b",", b";", b"\r", b"\n", b"\x00",
                b"\nContent-Length: 3", b"\nTransfer-Encoding: chunked", b"\r\nX: y", b"5"]
EOLS = [b"\r\n"] * 6 + [b"\n", b"\r", b"\r\r\n"]
FRAMING = [b"Content-Length: 5", b"Content-Length: 5, 5", b"Content-Length: 3", b"Content-Length: 0",
           b"Content-Length: 5\r\nContent-Length: 5", b"Content-Length: 5\r\nContent-Length: 6",
           b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked\r\nContent-Length: 5", b""]
BODIES = [b"", b"hello", b"abc", b"5\r\nhello\r\n0\r\n\r\n", b"0\r\n\r\n", b"3\r\nabc\r\n0 \r\n\r\n",
          b"5\nhello\n0\n\n", b"3\r\nabc\r\n0\r\nX: caf\xc3\xa9\r\n\r\n"]


@st.composite
def requests(draw):
    """(head, body) of one request, often valid, sometimes with a hazard in it."""
    method = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"OPTIONS"]))
    target = draw(st.sampled_from([b"/", b"/p?q=1", b"*", b"http://example.com/a?b", b"/a#f", b"x"]))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"]))
    lines = [method + b" " + target + b" " + version]
    fields = [b"Host: h"] if version == b"HTTP/1.1" or draw(st.booleans()) else []
    fields.append(draw(st.sampled_from(FRAMING)))
    for _ in range(draw(st.integers(0, 3))):
        value = b"".join(draw(st.lists(st.sampled_from(VALUE_PIECES), max_size=4)))
        fields.append(draw(st.sampled_from([b"X-A", b"Cookie", b"X-B"])) + b": " + value)
    fields = draw(st.permutations(fields))
    lines.extend(f for f in fields if f)
    head = b"".join(line + draw(st.sampled_from(EOLS)) for line in lines) + draw(st.sampled_from(EOLS))
    return head, draw(st.sampled_from(BODIES))


def front_end_readings(head):
    """The heads a front end may make of ``head``: as it is with a bare LF taken as a
    line end (RFC 9112 section 2.2, what h11 does), or with a bare LF, bare CR or NUL
    inside a field value replaced by SP (RFC 9110 section 5.5)."""
    return [head, re.sub(rb"(?<!\r)\n", b" ", head), re.sub(rb"\r(?!\n)", b" ", head), head.replace(b"\x00", b" ")]


@SETTINGS
@given(requests())
def test_where_both_accept_the_framing_is_identical(case):
    head, body = case
    data = head + body + NEXT
    ours, we_refused = lilush_reads(data)
    theirs, they_refused = h11_reads(data)
    common = min(len(ours), len(theirs))
    assert ours[:common] == theirs[:common]
    if len(ours) > len(theirs):
        assert they_refused, (ours, theirs)  # h11 is stricter here, never reading it otherwise
    if len(theirs) > len(ours):
        assert we_refused, (ours, theirs)


@SETTINGS
@given(requests())
def test_an_accepted_head_has_only_one_reading(case):
    head, body = case
    ours, _ = lilush_reads(head + body + NEXT)
    if not ours:
        return  # refused: nothing for a front end to disagree about
    for reading in front_end_readings(head):
        theirs, they_refused = h11_reads(reading + body + NEXT)
        common = min(len(ours), len(theirs))
        assert ours[:common] == theirs[:common], reading
        assert len(theirs) >= len(ours) or they_refused, reading

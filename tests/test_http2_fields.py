"""The one-pass check of received HTTP/2 header blocks (http2_request.field_error) against
h2's own ``validate_headers`` (which the server turns off for speed): both must reject the
same blocks, for requests and for trailers, and the cookie join must match h2's."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("h2")
from h2.exceptions import ProtocolError  # noqa: E402
from h2.utilities import HeaderValidationFlags, normalize_inbound_headers, validate_headers  # noqa: E402

from lilush_http.request import Limits  # noqa: E402
from lilush_http.protocols.http2_request import build_request, field_error  # noqa: E402

CHECK = settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NAMES = [b":method", b":scheme", b":path", b":authority", b":status", b":protocol", b":custom", b"host", b"te",
         b"connection", b"keep-alive", b"upgrade", b"transfer-encoding", b"proxy-connection", b"cookie",
         b"accept", b"x-a", b"X-Up", b"", b"a:b", b"::", b"sp ace", b"t\x7fab", b"\xc3\xa9"]
VALUES = [b"", b"GET", b"CONNECT", b"POST", b"http", b"/", b"/a?b", b"example.org", b"other.org", b"trailers",
          b"Trailers", b"gzip", b" lead", b"trail\t", b"in side", b"nul\x00", b"cr\r", b"lf\n", b"ws"]
STANDARD = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"example.org")]

field = st.tuples(st.sampled_from(NAMES) | st.binary(max_size=6), st.sampled_from(VALUES) | st.binary(max_size=6))
# A valid request's fields, shuffled and changed a little, reach the checks past the first field.
block = st.one_of(st.lists(field, max_size=8),
                  st.tuples(st.permutations(STANDARD), st.lists(field, max_size=4), st.integers(0, 8)).map(
                      lambda t: t[0][:t[2]] + t[1] + t[0][t[2]:]))


def h2_rejects(fields, trailers):
    flags = HeaderValidationFlags(is_client=False, is_trailer=trailers, is_response_header=False,
                                  is_push_promise=False)
    try:
        list(validate_headers(fields, flags))
    except ProtocolError:
        return True
    return False


@CHECK
@given(block, st.booleans())
def test_field_error_rejects_what_h2_rejects(fields, trailers):
    assert (field_error(fields, trailers) is not None) == h2_rejects(fields, trailers), fields


@pytest.mark.parametrize("fields", [STANDARD, STANDARD + [(b"host", b"example.org"), (b"te", b"trailers")],
                                    [(b":method", b"CONNECT"), (b":authority", b"example.org:443")]])
def test_well_formed_requests_pass(fields):
    assert field_error(fields) is None
    assert not h2_rejects(fields, False)


@pytest.mark.parametrize("fields", [STANDARD + [(b":path", b"/again")], STANDARD + [(b"Accept", b"x")],
                                    STANDARD + [(b"connection", b"close")], [(b":scheme", b"http"), (b":path", b"/")],
                                    STANDARD + [(b"host", b"other.org")], STANDARD + [(b"x", b" padded")]])
def test_malformed_requests_fail(fields):
    assert field_error(fields) is not None
    assert h2_rejects(fields, False)


def test_cookie_crumbs_join_as_h2_normalizes_them():
    fields = STANDARD + [(b"cookie", b"a=1"), (b"accept", b"*/*"), (b"cookie", b"b=2"), (b"cookie", b"c=3")]
    flags = HeaderValidationFlags(False, False, False, False)
    normalized = list(normalize_inbound_headers(fields, flags))
    ours, error = build_request(fields, Limits())
    theirs, _ = build_request(normalized, Limits())
    assert error is None
    assert ours.headers["cookie"] == "a=1; b=2; c=3"
    assert list(ours.headers.items()) == list(theirs.headers.items())

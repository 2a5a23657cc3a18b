"""Cookie persistence (haproxy.md §5): every mode and option, and the spec's observed examples verbatim."""

from __future__ import annotations

import pytest

from balancier.proxy.config.model import CookieConfig
from balancier.proxy.persistence import (
    RequestPersistence,
    decode_date,
    encode_date,
    is_cacheable,
    on_request,
    on_response,
)

from proxy_builders import make_backend

NOW = 1795683588.0  # encode_date(NOW) == "awf1B", the date of the spec's observed cookie


def seed_backend(cookie: CookieConfig, **kw):
    return make_backend(
        [("ents3", 256, {"cookie": "s3"}), ("ents2", 128, {"cookie": "s2"}), ("ents1", 1, {"cookie": "s1"}),
         ("ent-maintenance", 1, {"backup": True})],
        cookie=cookie, kind="listen", name="esup-proxy", **kw)


PREFIX = CookieConfig("JSESSIONID", "prefix")


def flags(req: RequestPersistence, resp) -> str:
    return req.flag + resp.flag


# --- prefix mode (the seed) -----------------------------------------------------------------------------------

def test_prefix_valid_cookie_is_stripped_and_reaches_its_server():
    be = seed_backend(PREFIX)
    r = on_request(PREFIX, be, ["JSESSIONID=s2~abc123; other=1"], "GET", NOW)
    assert r.server is be.server("ents2") and r.direct
    assert r.flag == "V"
    assert r.cookie_headers == ["JSESSIONID=abc123; other=1"]
    resp = on_response(PREFIX, r.server, r, [], "GET", 200, False, NOW)
    assert flags(r, resp) == "VN"


def test_prefix_cookie_naming_a_server_in_maint_falls_back_to_load_balancing():
    be = seed_backend(PREFIX)
    be.set_admin(be.server("ents3"), "maint")
    r = on_request(PREFIX, be, ["JSESSIONID=s3~q"], "GET", NOW)
    assert r.server is None and not r.direct
    assert r.flag == "D"
    assert r.cookie_headers == ["JSESSIONID=q"]  # the prefix goes even though its server is not used
    chosen = be.pick("127.0.0.1")
    assert chosen.name != "ents3"
    resp = on_response(PREFIX, chosen, r, [], "GET", 200, False, NOW)
    assert flags(r, resp) == "DN"  # the spec's `--DN`


def test_prefix_without_delimiter_is_invalid_and_forwarded_unchanged():
    be = seed_backend(PREFIX)
    r = on_request(PREFIX, be, ["JSESSIONID=nodelim"], "GET", NOW)
    assert (r.server, r.flag, r.changed) == (None, "I", False)
    assert r.cookie_headers == ["JSESSIONID=nodelim"]
    resp = on_response(PREFIX, be.server("ents2"), r, [], "GET", 200, False, NOW)
    assert flags(r, resp) == "IN"


def test_prefix_unknown_server_still_stripped():
    be = seed_backend(PREFIX)
    r = on_request(PREFIX, be, ["a=1; JSESSIONID=zz~v1"], "GET", NOW)
    assert (r.server, r.flag) == (None, "I")
    assert r.cookie_headers == ["a=1; JSESSIONID=v1"]


def test_prefix_empty_server_part_never_matches():
    be = seed_backend(PREFIX)
    r = on_request(PREFIX, be, ["JSESSIONID=~v1"], "GET", NOW)
    assert (r.server, r.flag) == (None, "I")
    assert r.cookie_headers == ["JSESSIONID=v1"]


def test_prefix_response_cookie_is_prefixed():
    be = seed_backend(PREFIX)
    r = on_request(PREFIX, be, [], "GET", NOW)
    assert r.flag == "N"
    resp = on_response(PREFIX, be.server("ents3"), r, ["JSESSIONID=abc123; Path=/"], "GET", 200, False, NOW)
    assert resp.set_cookie_headers == ["JSESSIONID=s3~abc123; Path=/"]
    assert flags(r, resp) == "NR"  # the spec's `--NR`


def test_prefix_server_without_cookie_value_passes_the_cookie():
    be = seed_backend(PREFIX)
    r = on_request(PREFIX, be, [], "GET", NOW)
    resp = on_response(PREFIX, be.server("ent-maintenance"), r, ["JSESSIONID=x"], "GET", 200, False, NOW)
    assert resp.set_cookie_headers == ["JSESSIONID=x"] and resp.flag == "P"


def test_other_cookies_and_attributes_are_ignored():
    be = seed_backend(PREFIX)
    r = on_request(PREFIX, be, ["$Version=1; JSESSIONIDX=s2~a; flag; JSESSIONID=s1~b"], "GET", NOW)
    assert r.server is be.server("ents1")
    assert r.cookie_headers == ["$Version=1; JSESSIONIDX=s2~a; flag; JSESSIONID=b"]


def test_first_occurrence_decides_across_headers():
    be = seed_backend(PREFIX)
    r = on_request(PREFIX, be, ["x=1", "JSESSIONID=s1~a", "JSESSIONID=s2~b"], "GET", NOW)
    assert r.server is be.server("ents1")
    assert r.cookie_headers == ["x=1", "JSESSIONID=a", "JSESSIONID=b"]


# --- server states as persistence targets ------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("change", "flag", "kept"),
    [
        (lambda be, s: be.set_admin(s, "drain"), "V", True),
        (lambda be, s: be.set_weight(s, 0), "V", True),
        (lambda be, s: be.set_op(s, "stopping"), "V", True),
        (lambda be, s: be.set_op(s, "down"), "D", False),
        (lambda be, s: be.set_admin(s, "maint"), "D", False),
    ],
)
def test_which_states_keep_persistence(change, flag, kept):
    be = seed_backend(PREFIX)
    s = be.server("ents2")
    change(be, s)
    r = on_request(PREFIX, be, ["JSESSIONID=s2~a"], "GET", NOW)
    assert r.flag == flag
    assert (r.server is s) is kept


def test_option_persist_sticks_to_a_down_server_with_flag_d():
    be = seed_backend(PREFIX, persist=True)
    s = be.server("ents2")
    be.set_op(s, "down")
    r = on_request(PREFIX, be, ["JSESSIONID=s2~a"], "GET", NOW)
    assert (r.server, r.flag, r.direct) == (s, "D", True)
    be.set_admin(s, "maint")
    r = on_request(PREFIX, be, ["JSESSIONID=s2~a"], "GET", NOW)
    assert (r.server, r.flag, r.direct) == (None, "D", False)


def test_shared_cookie_value_goes_to_the_next_running_server():
    cfg = CookieConfig("SRV", "insert")
    be = make_backend([("a", 1, {"cookie": "x"}), ("b", 1, {"cookie": "x"})], cookie=cfg)
    be.set_op(be.server("a"), "down")
    r = on_request(cfg, be, ["SRV=x"], "GET", NOW)
    assert (r.server, r.flag) == (be.server("b"), "V")


def test_redispatch_breaks_persistence():
    be = seed_backend(PREFIX)
    r = on_request(PREFIX, be, ["JSESSIONID=s2~a"], "GET", NOW)
    r.redispatched()
    assert (r.flag, r.direct) == ("D", False)


# --- insert mode ---------------------------------------------------------------------------------------------

def test_insert_new_client_gets_a_cookie():
    cfg = CookieConfig("SRV", "insert")
    be = make_backend([("a", 1, {"cookie": "A"})], cookie=cfg)
    r = on_request(cfg, be, [], "GET", NOW)
    resp = on_response(cfg, be.server("a"), r, [], "GET", 200, False, NOW)
    assert resp.add_headers == [("Set-Cookie", "SRV=A; path=/")]
    assert flags(r, resp) == "NI"


def test_insert_direct_request_gets_no_new_cookie():
    cfg = CookieConfig("SRV", "insert")
    be = make_backend([("a", 1, {"cookie": "A"})], cookie=cfg)
    r = on_request(cfg, be, ["SRV=A"], "GET", NOW)
    assert r.cookie_headers == ["SRV=A"]  # not indirect: forwarded untouched
    resp = on_response(cfg, r.server, r, [], "GET", 200, False, NOW)
    assert resp.add_headers == [] and flags(r, resp) == "VN"


def test_insert_indirect_deletes_the_cookie_and_empty_header():
    cfg = CookieConfig("SRV", "insert", indirect=True)
    be = make_backend([("a", 1, {"cookie": "A"})], cookie=cfg)
    r = on_request(cfg, be, ["SRV=A", "x=1; SRV=A; y=2", "SRV=A; z=3"], "GET", NOW)
    assert r.cookie_headers == ["x=1; y=2", "z=3"]
    assert r.changed and r.server is be.server("a")


def test_insert_removes_the_servers_own_cookie_then_inserts():
    cfg = CookieConfig("SRV", "insert")
    be = make_backend([("a", 1, {"cookie": "A"})], cookie=cfg)
    r = on_request(cfg, be, [], "GET", NOW)
    resp = on_response(cfg, be.server("a"), r, ["SRV=mine; path=/", "other=1"], "GET", 200, False, NOW)
    assert resp.set_cookie_headers == ["other=1"]
    assert resp.add_headers == [("Set-Cookie", "SRV=A; path=/")]
    assert resp.flag == "I"


def test_indirect_direct_request_deletes_server_cookie():
    cfg = CookieConfig("SRV", "rewrite", indirect=True)
    be = make_backend([("a", 1, {"cookie": "A"})], cookie=cfg)
    r = on_request(cfg, be, ["SRV=A"], "GET", NOW)
    resp = on_response(cfg, r.server, r, ["SRV=x"], "GET", 200, False, NOW)
    assert resp.set_cookie_headers == [] and resp.flag == "D"


def test_insert_all_attributes_and_dates_as_observed():
    cfg = CookieConfig("SRV", "insert", httponly=True, secure=True, domains=(".example.com",), maxidle=3600,
                       maxlife=86400)
    be = make_backend([("a", 1, {"cookie": "A"})], cookie=cfg)
    r = on_request(cfg, be, [], "GET", NOW)
    resp = on_response(cfg, be.server("a"), r, [], "GET", 200, False, NOW)
    assert resp.add_headers == [("Set-Cookie", "SRV=A|awf1B|awf1B; path=/; domain=.example.com; HttpOnly; Secure")]


def test_insert_attr_and_several_domains_order():
    cfg = CookieConfig("SRV", "insert", domains=("a.org", "b.org"), secure=True, attrs=("SameSite=Lax", "X=1"))
    be = make_backend([("a", 1, {"cookie": "A"})], cookie=cfg)
    r = on_request(cfg, be, [], "GET", NOW)
    resp = on_response(cfg, be.server("a"), r, [], "GET", 200, False, NOW)
    assert resp.add_headers[0][1] == "SRV=A; path=/; domain=a.org; domain=b.org; Secure; SameSite=Lax; X=1"


def test_insert_server_without_cookie_deletes_the_browsers_cookie():
    cfg = CookieConfig("SRV", "insert")
    be = make_backend([("a", 1), ("m", 1, {"backup": True})], cookie=cfg)
    r = on_request(cfg, be, [], "GET", NOW)
    resp = on_response(cfg, be.server("m"), r, [], "GET", 200, False, NOW)
    assert resp.add_headers == [("Set-Cookie", "SRV=; Expires=Thu, 01-Jan-1970 00:00:01 GMT; path=/")]
    assert resp.flag == "I"


def test_dateless_cookie_with_maxidle_is_accepted_and_refreshed():
    cfg = CookieConfig("SRV", "insert", maxidle=600)
    be = make_backend([("a", 1, {"cookie": "A"})], cookie=cfg)
    r = on_request(cfg, be, ["SRV=A"], "GET", NOW)
    resp = on_response(cfg, r.server, r, [], "GET", 200, False, NOW)
    assert flags(r, resp) == "VU"  # the spec's `--VU`
    assert resp.add_headers == [("Set-Cookie", f"SRV=A|{encode_date(NOW)}; path=/")]


def test_idle_cookie_expires():
    cfg = CookieConfig("SRV", "insert", maxidle=600)
    be = make_backend([("a", 1, {"cookie": "A"})], cookie=cfg)
    old = encode_date(NOW - 700)
    r = on_request(cfg, be, [f"SRV=A|{old}"], "GET", NOW)
    assert (r.server, r.flag) == (None, "E")
    resp = on_response(cfg, be.server("a"), r, [], "GET", 200, False, NOW)
    assert resp.flag == "I"
    fresh = encode_date(NOW - 100)
    r2 = on_request(cfg, be, [f"SRV=A|{fresh}"], "GET", NOW)
    assert r2.flag == "V"
    assert on_response(cfg, r2.server, r2, [], "GET", 200, False, NOW).flag == "U"


def test_too_old_cookie_by_maxlife():
    cfg = CookieConfig("SRV", "insert", maxlife=3600)
    be = make_backend([("a", 1, {"cookie": "A"})], cookie=cfg)
    first = encode_date(NOW - 4000)
    last = encode_date(NOW - 10)
    r = on_request(cfg, be, [f"SRV=A|{last}|{first}"], "GET", NOW)
    assert (r.server, r.flag) == (None, "O")
    ok = on_request(cfg, be, [f"SRV=A|{last}|{encode_date(NOW - 100)}"], "GET", NOW)
    assert ok.flag == "V"
    resp = on_response(cfg, ok.server, ok, [], "GET", 200, False, NOW)
    value = resp.add_headers[0][1]
    # the first date is carried over unchanged, the last date refreshed.
    assert value.startswith(f"SRV=A|{encode_date(NOW)}|{encode_date(NOW - 100)}; path=/")


def test_date_far_in_the_future_is_rejected():
    cfg = CookieConfig("SRV", "insert", maxidle=600)
    be = make_backend([("a", 1, {"cookie": "A"})], cookie=cfg)
    r = on_request(cfg, be, [f"SRV=A|{encode_date(NOW + 2 * 86400)}"], "GET", NOW)
    assert r.flag == "E"


def test_postonly_inserts_only_on_post():
    cfg = CookieConfig("SRV", "insert", postonly=True)
    be = make_backend([("a", 1, {"cookie": "A"})], cookie=cfg)
    r = on_request(cfg, be, [], "GET", NOW)
    assert on_response(cfg, be.server("a"), r, [], "GET", 200, False, NOW).add_headers == []
    r = on_request(cfg, be, [], "POST", NOW)
    assert on_response(cfg, be.server("a"), r, [], "POST", 200, False, NOW).flag == "I"


def test_preserve_leaves_the_servers_cookie_and_skips_insert():
    cfg = CookieConfig("SRV", "insert", preserve=True)
    be = make_backend([("a", 1, {"cookie": "A"})], cookie=cfg)
    r = on_request(cfg, be, [], "GET", NOW)
    resp = on_response(cfg, be.server("a"), r, ["SRV=logout; Max-Age=0"], "GET", 200, False, NOW)
    assert resp.set_cookie_headers == ["SRV=logout; Max-Age=0"]
    assert resp.add_headers == [] and resp.flag == "P"
    # without a server cookie, preserve still inserts
    resp = on_response(cfg, be.server("a"), r, [], "GET", 200, False, NOW)
    assert resp.flag == "I"


def test_nocache_marks_cacheable_responses_private():
    cfg = CookieConfig("SRV", "insert", nocache=True)
    be = make_backend([("a", 1, {"cookie": "A"})], cookie=cfg)
    r = on_request(cfg, be, [], "GET", NOW)
    resp = on_response(cfg, be.server("a"), r, [], "GET", 200, True, NOW)
    assert resp.add_headers == [("Set-Cookie", "SRV=A; path=/"), ("Cache-control", "private")]
    resp = on_response(cfg, be.server("a"), r, [], "GET", 200, False, NOW)
    assert resp.add_headers == [("Set-Cookie", "SRV=A; path=/")]


def test_interim_responses_are_not_touched():
    cfg = CookieConfig("SRV", "insert")
    be = make_backend([("a", 1, {"cookie": "A"})], cookie=cfg)
    r = on_request(cfg, be, [], "GET", NOW)
    resp = on_response(cfg, be.server("a"), r, ["SRV=x"], "GET", 100, False, NOW)
    assert (resp.set_cookie_headers, resp.add_headers) == (["SRV=x"], [])


# --- rewrite and passive -----------------------------------------------------------------------------------------

def test_rewrite_replaces_the_value():
    cfg = CookieConfig("SRV", "rewrite")
    be = make_backend([("a", 1, {"cookie": "A"})], cookie=cfg)
    r = on_request(cfg, be, [], "GET", NOW)
    resp = on_response(cfg, be.server("a"), r, ["SRV=session42; Path=/; HttpOnly"], "GET", 200, False, NOW)
    assert resp.set_cookie_headers == ["SRV=A; Path=/; HttpOnly"]
    assert resp.flag == "R" and resp.add_headers == []
    r2 = on_request(cfg, be, ["SRV=A"], "GET", NOW)
    assert (r2.server, r2.flag, r2.cookie_headers) == (be.server("a"), "V", ["SRV=A"])


def test_passive_reads_but_never_writes():
    cfg = CookieConfig("SRV", "passive")
    be = make_backend([("a", 1, {"cookie": "A"}), ("b", 1, {"cookie": "B"})], cookie=cfg)
    r = on_request(cfg, be, ["SRV=B"], "GET", NOW)
    # HAProxy 2.6 logs `----` for a passive cookie: it decides, but its columns stay empty
    assert (r.server, r.flag, r.direct) == (be.server("b"), "-", True)
    resp = on_response(cfg, r.server, r, ["SRV=B"], "GET", 200, False, NOW)
    assert resp.set_cookie_headers == ["SRV=B"] and resp.flag == "-" and resp.add_headers == []
    r.redispatched()
    assert r.flag == "-"
    assert on_request(cfg, be, [], "GET", NOW).flag == "-"


def test_passive_indirect_shows_its_flags():
    cfg = CookieConfig("SRV", "passive", indirect=True)
    be = make_backend([("a", 1, {"cookie": "A"})], cookie=cfg)
    r = on_request(cfg, be, ["SRV=A"], "GET", NOW)
    resp = on_response(cfg, r.server, r, ["SRV=x"], "GET", 200, False, NOW)
    assert (r.flag, resp.flag, resp.set_cookie_headers) == ("V", "D", [])


def test_no_cookie_configured():
    be = make_backend([("a", 1)])
    r = on_request(None, be, ["x=1"], "GET", NOW)
    assert (r.server, r.flag, r.cookie_headers) == (None, "-", ["x=1"])
    assert on_response(None, be.server("a"), r, ["x=1"], "GET", 200, False, NOW).flag == "-"


# --- helpers -------------------------------------------------------------------------------------------------

def test_date_codec():
    assert encode_date(NOW) == "awf1B"
    assert decode_date("awf1B") == 1795683588
    assert decode_date("aw!1B") == 0
    assert decode_date("aw") == 0


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [
        ("GET", [("Cache-Control", "max-age=60")], True),
        ("GET", [("ETag", '"x"')], True),
        ("HEAD", [("Expires", "Thu, 01 Dec 2094 16:00:00 GMT")], True),
        ("GET", [("Cache-Control", "private, max-age=60")], False),
        ("GET", [("Cache-Control", "no-store")], False),
        ("GET", [("Last-Modified", "x"), ("Pragma", "no-cache")], False),
        ("GET", [], False),
        ("POST", [("Cache-Control", "max-age=60")], False),
    ],
)
def test_is_cacheable(method, headers, expected):
    assert is_cacheable(method, 200, headers) is expected


def test_cookie_dated_in_the_current_slot_is_not_refreshed():
    """Observed on HAProxy 2.6: a cookie whose last date is this 4-second slot needs no refresh (`--VN`)."""
    cfg = CookieConfig("SRV", "insert", indirect=True, maxidle=30, maxlife=3600)
    be = make_backend([("s3", 1, {"cookie": "s3"})], cookie=cfg)
    stamp = encode_date(NOW)
    r = on_request(cfg, be, [f"x=1; SRV=s3|{stamp}|{stamp}; y=2"], "GET", NOW)
    assert r.cookie_headers == ["x=1; y=2"]
    resp = on_response(cfg, r.server, r, [], "GET", 200, False, NOW)
    assert (r.flag, resp.flag, resp.add_headers) == ("V", "N", [])
    # 4 s later the slot has passed: the date is refreshed, the first date kept
    later = on_response(cfg, r.server, r, [], "GET", 200, False, NOW + 4)
    assert later.flag == "U"
    assert later.add_headers[0][1].startswith(f"SRV=s3|{encode_date(NOW + 4)}|{stamp}; path=/")

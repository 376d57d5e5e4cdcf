#!/usr/bin/env python3
"""Writes the seed corpora of tests/fuzz/corpus/<target>/ (the files are
committed; run this only to regenerate them after changing a target's input
layout; it overwrites its own files and leaves others alone). Needs Python 3
and, for the EdDSA tokens, the 'cryptography' package.

Each target's input layout is described at the top of its fuzz_<target>.c;
the leading configuration bytes written here follow it.
"""
import base64
import hashlib
import hmac
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")

# The fixed keys of fuzz_jwt.c / fuzz_client_message.c.
HS_SECRET = b"agentwire-fuzz-secret"
ED_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
EXP_2100 = 4102444800


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jdump(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def ed_sign(msg):
    try:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    except ImportError:
        return None
    return Ed25519PrivateKey.from_private_bytes(ED_SEED).sign(msg)


def token(header, claims, alg="HS256"):
    """A compact JWS; header and claims are dicts or raw bytes."""
    h = header if isinstance(header, bytes) else jdump(header)
    p = claims if isinstance(claims, bytes) else jdump(claims)
    signing = (b64url(h) + "." + b64url(p)).encode()
    if alg == "HS256":
        sig = hmac.new(HS_SECRET, signing, hashlib.sha256).digest()
    elif alg == "EdDSA":
        sig = ed_sign(signing)
        if sig is None:
            return None
    else:
        sig = b""
    return signing.decode() + "." + b64url(sig)


# ---- http: [config, seed, seed] + stream ----------------------------------

def http():
    ws_head = (b"GET /ws?token=abc HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
               b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: jwt-auth, jwt.eyJ0\r\n\r\n")
    body = jdump({"user_id": "demo", "type": "agent_thinking", "thread_id": "t1",
                  "run_id": "r1", "reasoning": "Looking it up"})
    publish = (b"POST /api/v1/publish HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
               b"Authorization: Bearer 9a7e\r\nContent-Type: application/json\r\n"
               b"Idempotency-Key: k-1\r\nContent-Length: " + str(len(body)).encode() +
               b"\r\n\r\n" + body)
    chunked = (b"POST /api/v1/batch HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"4\r\nWiki\r\n5\r\npedia\r\n0\r\nX-Trailer: t\r\n\r\n")
    seeds = {
        "ws_upgrade": (0x00, ws_head + b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"),
        "publish": (0x00, publish),
        "publish_split": (0x10, publish),
        "chunked": (0x00, chunked),
        "chunked_small_body_limit": (0x08, chunked),
        "pipelined": (0x20, b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n"
                            b"GET /metrics HTTP/1.1\r\nHost: h\r\n\r\n"
                            b"HEAD / HTTP/1.1\r\n\r\n"),
        "close_then_more": (0x00, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n"),
        "http10": (0x00, b"GET /index.html HTTP/1.0\r\n\r\n"),
        "absolute_form": (0x00, b"GET http://example.com:8080/api/v1/history?user_id=d%20e+mo&since=3#f "
                                b"HTTP/1.1\r\nHost: example.com\r\n\r\n"),
        "absolute_no_path": (0x00, b"GET http://example.com?x=1 HTTP/1.1\r\n\r\n"),
        "options_star": (0x00, b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n"),
        "connect": (0x00, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
        "query_escapes": (0x00, b"GET /p%41th/%2e%2E?token=a%2Bb%3D&user_id=%00&x&=y&since=%zz "
                                b"HTTP/1.1\r\n\r\n"),
        "empty_and_spaced_values": (0x00, b"GET / HTTP/1.1\r\nX-Empty:\r\nX-Spaces: \t a b \t\r\n"
                                          b"connection: Upgrade\r\nUPGRADE: websocket\r\n\r\n"),
        "obs_fold": (0x00, b"GET / HTTP/1.1\r\nX-Long: a\r\n  b\r\n\r\n"),
        "space_in_name": (0x00, b"POST / HTTP/1.1\r\nContent-Length : 5\r\n\r\nhello"),
        "content_length_too_big": (0x04, b"POST / HTTP/1.1\r\nContent-Length: 17\r\n\r\n01234567890123456"),
        "head_too_big": (0x01, b"GET /" + b"a" * 80 + b" HTTP/1.1\r\n\r\n"),
        "many_headers": (0x00, b"GET / HTTP/1.1\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(66)) + b"\r\n"),
        "upgrade_no_connection": (0x00, b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\nrest"),
        "lf_only": (0x00, b"GET / HTTP/1.1\nHost: h\n\n"),
        "bad_version": (0x00, b"GET / HTTP/9.9\r\n\r\n"),
    }
    for name, (cfg, data) in seeds.items():
        write("http", name, bytes([cfg, 0x12, 0x34]) + data)


# ---- ws: [config, seed, seed] + stream --------------------------------------
# config bit 0: expect_masked, bits 1-3: limit index (0, 1, 125, 126, 1000,
# 65535, 65536, max), bit 4: many pieces, bits 5-7: extra checks. Bit 7 of
# the first seed byte: allow_rsv1 (permessage-deflate negotiated).

def frame(opcode, payload=b"", fin=True, mask=None, rsv=0):
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    m = 0x80 if mask is not None else 0
    if n < 126:
        head = bytes([b0, m | n])
    elif n <= 0xFFFF:
        head = bytes([b0, m | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, m | 127]) + struct.pack(">Q", n)
    if mask is None:
        return head + payload
    return head + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload))


def ws():
    K = b"\x37\xfa\x21\x3d"
    MAX = 7 << 1     # limit index 7: no limit
    M1000 = 4 << 1   # limit 1000
    seeds = {
        # RFC 6455 section 5.7
        "rfc_unmasked_text": (MAX, b"\x81\x05\x48\x65\x6c\x6c\x6f"),
        "rfc_masked_text": (MAX | 1, b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"),
        "rfc_fragmented": (MAX, b"\x01\x03\x48\x65\x6c\x80\x02\x6c\x6f"),
        "rfc_ping": (MAX, b"\x89\x05\x48\x65\x6c\x6c\x6f"),
        "rfc_ping_pong_masked": (MAX | 1, frame(9, b"Hello", mask=K) +
                                 b"\x8a\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"),
        "rfc_256_binary": (MAX, b"\x82\x7E\x01\x00" + bytes(range(256))),
        "rfc_64k_header": (MAX, b"\x82\x7F\x00\x00\x00\x00\x00\x01\x00\x00" + b"x" * 16),
        "64k_over_limit": (M1000, b"\x82\x7F\x00\x00\x00\x00\x00\x01\x00\x00"),
        "json_message": (M1000 | 1 | 0x10, frame(1, jdump({"type": "ping", "message_id": "m1"}), mask=K)),
        "fragmented_utf8_split": (MAX | 1 | 0x10, frame(1, "h\u00e9\u20ac".encode()[:3], fin=False, mask=K) +
                                  frame(9, b"", mask=K) +
                                  frame(0, "h\u00e9\u20ac".encode()[3:], mask=K)),
        "text_bad_utf8": (MAX | 1, frame(1, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80", mask=K)),
        "close_1000_reason": (MAX | 1, frame(8, struct.pack(">H", 1000) + b"bye \xe2\x9c\x93", mask=K)),
        "close_empty": (MAX | 1, frame(8, b"", mask=K)),
        "close_1005_invalid": (MAX | 1, frame(8, struct.pack(">H", 1005), mask=K)),
        "close_one_byte": (MAX | 1, frame(8, b"\x03", mask=K)),
        "close_bad_reason": (MAX | 1, frame(8, struct.pack(">H", 4000) + b"\xff", mask=K)),
        "unmasked_from_client": (MAX | 1, frame(1, b"hi")),
        "rsv_set": (MAX | 1, frame(1, b"hi", mask=K, rsv=4)),
        "reserved_opcode": (MAX | 1, frame(3, b"", mask=K)),
        "ping_too_long": (MAX | 1, frame(9, b"p" * 126, mask=K)),
        "ping_not_fin": (MAX | 1, frame(9, b"p", fin=False, mask=K)),
        "cont_without_start": (MAX | 1, frame(0, b"x", mask=K)),
        "text_inside_text": (MAX | 1, frame(1, b"a", fin=False, mask=K) + frame(1, b"b", mask=K)),
        "non_minimal_16": (MAX, b"\x82\x7e\x00\x05hello"),
        "non_minimal_64": (MAX, b"\x82\x7f" + struct.pack(">Q", 5) + b"hello"),
        "top_bit_64": (MAX, b"\x82\x7f\x80" + b"\x00" * 7),
        "message_limit_fragments": (M1000 | 1 | 0x10, frame(2, b"a" * 600, fin=False, mask=K) +
                                    frame(0, b"b" * 600, mask=K)),
        "mask_roundtrip_close": (0xE0 | MAX, b"\x03\xe8" + "r\u00e9ason \u20ac".encode() * 20),
        "accept_key": (0x80 | MAX, b"\x03\xe8" + b"dGhlIHNhbXBsZSBub25jZQ=="),
    }
    for name, (cfg, data) in seeds.items():
        write("ws", name, bytes([cfg, 0x5a, 0xa5]) + data)
    # permessage-deflate (RFC 7692 section 7.2.3.1: "Hello" compressed)
    hello = b"\xf2\x48\xcd\xc9\xc9\x07\x00"
    deflate = {
        "deflate_text": (MAX | 1, frame(1, hello, mask=K, rsv=4)),
        "deflate_fragmented": (MAX | 1 | 0x10, frame(1, hello[:3], fin=False, mask=K, rsv=4) +
                               frame(9, b"", mask=K) + frame(0, hello[3:], mask=K)),
        "deflate_binary_then_plain_text": (MAX | 1, frame(2, hello, mask=K, rsv=4) +
                                           frame(1, "plain \u00e9".encode(), mask=K)),
        "deflate_rsv1_on_continuation": (MAX | 1, frame(1, b"a", fin=False, mask=K) +
                                         frame(0, hello, mask=K, rsv=4)),
        "deflate_rsv1_on_ping": (MAX | 1, frame(9, b"", mask=K, rsv=4)),
        "deflate_rsv2": (MAX | 1, frame(1, hello, mask=K, rsv=2)),
        "deflate_not_utf8_ok": (M1000 | 1, frame(1, b"\xff\xfe\x00", mask=K, rsv=4)),
        "deflate_roundtrip": (0x40 | MAX, b"\xc1\x02" + b"\x37\xfa\x21\x3d" + hello),
    }
    for name, (cfg, data) in deflate.items():
        write("ws", name, bytes([cfg, 0xda, 0xa5]) + data)


# ---- utf8: the text itself --------------------------------------------------

def utf8():
    seeds = {
        "ascii": b"Hello, agentwire! {\"type\":\"ping\"}",
        "latin_cjk_emoji": "h\u00e9llo \u4e16\u754c \U0001F600".encode(),
        "greek_kosme": b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5",
        "boundaries_valid": "\u007f\u0080\u07ff\u0800\ud7ff\ue000\ufffd\uffff\U00010000\U0010FFFF".encode(
            "utf-8", "surrogatepass"),
        "long_ascii_then_multibyte": b"a" * 61 + "\u20ac".encode() + b"b" * 13 + "\U0001F600".encode(),
        "overlong_2": b"abc\xc0\x80",
        "overlong_3": b"\xe0\x80\xaf",
        "overlong_4": b"\xf0\x80\x80\xaf",
        "surrogate_high": b"\xed\xa0\x80",
        "surrogate_low": b"\xed\xbf\xbf",
        "above_max": b"\xf4\x90\x80\x80",
        "f5": b"\xf5\x80\x80\x80",
        "stray_continuation": b"ab\x80cd",
        "truncated_3": b"\xe2\x82",
        "truncated_4_at_end": b"xyz\xf0\x9f\x98",
        "ff_fe": b"\xff\xfe",
        "nul_inside": b"a\x00b",
    }
    for name, data in seeds.items():
        write("utf8", name, data)


# ---- jwt: [config, leeway] + token (modes 0/1) or header\npayload (2/3) ------
# config bits 0-1 mode, bit 2 issuer, bit 3 audience, bits 4-6 clock index
# (0: 1700000000, 1: 4102444800, 2: 0, 3: -1, 4: max, 5: min, ...), bit 7
# max_token 512. leeway byte bits 0-1: 30, 0, 86400, max.

def jwt():
    hs = {"alg": "HS256", "typ": "JWT"}
    ed = {"alg": "EdDSA", "typ": "JWT"}
    ok = {"sub": "demo", "exp": EXP_2100, "iat": 1700000000}
    full = {"sub": "alice", "exp": EXP_2100, "nbf": 1600000000, "iat": 1600000000,
            "iss": "https://issuer.example", "aud": ["other", "agentwire"]}
    toks = {
        "hs256_valid": (0x00, token(hs, ok)),
        "hs256_iss_aud": (0x0C, token(hs, full)),
        "hs256_aud_string": (0x08, token(hs, dict(full, aud="agentwire"))),
        "hs256_wrong_aud": (0x08, token(hs, dict(full, aud="nope"))),
        "hs256_expired": (0x00, token(hs, dict(ok, exp=1600000000))),
        "hs256_exp_now": (0x10, token(hs, ok)),
        "hs256_not_yet": (0x00, token(hs, dict(ok, nbf=1800000000))),
        "hs256_real_times": (0x00, token(hs, b'{"sub":"demo","exp":4102444800.5,"nbf":1.5e9}')),
        "hs256_no_sub": (0x00, token(hs, {"exp": EXP_2100})),
        "hs256_typ_lower": (0x00, token({"alg": "HS256", "typ": "jwt"}, ok)),
        "hs256_typ_other": (0x00, token({"alg": "HS256", "typ": "JOSE"}, ok)),
        "hs256_crit": (0x00, token({"alg": "HS256", "crit": ["exp"]}, ok)),
        "hs256_dup_keys": (0x00, token(b'{"alg":"HS256","alg":"none"}', ok)),
        "hs256_payload_array": (0x00, token(hs, b"[1,2]")),
        "alg_none": (0x00, b64url(jdump({"alg": "none"})) + "." + b64url(jdump(ok)) + "."),
        "rs256_header": (0x00, token({"alg": "RS256"}, ok, alg="none") + "c2ln"),
        "hs256_to_eddsa": (0x01, token(hs, ok)),
        "hs256_padded": (0x00, token(hs, ok) + "="),
        "hs256_long_max512": (0x80, token(hs, dict(ok, pad="x" * 600))),
        "eddsa_valid": (0x01, token(ed, ok, alg="EdDSA")),
        "eddsa_iss_aud": (0x0D, token({"alg": "EdDSA"}, full, alg="EdDSA")),
        "eddsa_leeway_edge": (0x71, token(ed, ok, alg="EdDSA")),
        "three_dots": (0x00, "a.b.c.d"),
        "empty_parts": (0x00, ".."),
    }
    for name, (cfg, tok) in toks.items():
        if tok is None:
            print("gen_corpus: no 'cryptography' module, skipping", name, file=sys.stderr)
            continue
        write("jwt", name, bytes([cfg, 0x00]) + tok.encode())
    write("jwt", "hs256_valid_leeway_max", bytes([0x50, 0x03]) + token(hs, ok).encode())

    signed = {
        "sign_hs_default_header": (0x02, jdump(ok)),
        "sign_hs_full": (0x0E, jdump(hs) + b"\n" + jdump(full)),
        "sign_hs_sub_255": (0x02, jdump(hs) + b"\n" + jdump(dict(ok, sub="s" * 255))),
        "sign_hs_sub_256": (0x02, jdump(hs) + b"\n" + jdump(dict(ok, sub="s" * 256))),
        "sign_hs_exp_string": (0x02, jdump(hs) + b"\n" + b'{"sub":"x","exp":"4102444800"}'),
        "sign_hs_extreme_times": (0x42, jdump(hs) + b"\n" +
                                  b'{"sub":"x","exp":9223372036854775807,"nbf":-9223372036854775808}'),
        "sign_hs_real_edges": (0x02, jdump(hs) + b"\n" + b'{"sub":"x","exp":9.2233720368547758e18,"iat":-0.5}'),
        "sign_hs_nbf_null": (0x02, jdump(hs) + b"\n" + b'{"sub":"x","exp":4102444800,"nbf":null}'),
        "sign_ed_default_header": (0x03, jdump(ok)),
        "sign_ed_aud_array": (0x0B, jdump(ed) + b"\n" + jdump(dict(ok, aud=["agentwire"]))),
        "sign_ed_alg_mismatch": (0x03, jdump(hs) + b"\n" + jdump(ok)),
    }
    for name, (cfg, data) in signed.items():
        write("jwt", name, bytes([cfg, 0x00]) + data)


# ---- client messages: one text message --------------------------------------

def client_message():
    refresh = token({"alg": "HS256", "typ": "JWT"}, {"sub": "demo", "exp": EXP_2100})
    msgs = {
        "ping": {"type": "ping", "message_id": "m1", "timestamp": 1700000000000},
        "ping_payload": {"type": "ping", "payload": {"timestamp": "t"}, "timestamp": 1},
        "heartbeat": {"type": "heartbeat"},
        "refresh_valid": {"type": "refresh", "message_id": "r1", "payload": {"token": refresh}},
        "refresh_bad_token": {"type": "refresh", "token": "a.b.c"},
        "refresh_no_token": {"type": "refresh", "payload": {}},
        "resume": {"type": "resume", "message_id": "x", "payload": {"since": 3, "epoch": "0123456789abcdef"}},
        "resume_ahead": {"type": "resume", "since": 99, "epoch": "0123456789abcdef"},
        "resume_other_epoch": {"type": "resume", "since": 0, "epoch": "e"},
        "resume_negative": {"type": "resume", "since": -1, "epoch": "e"},
        "start_agent": {"type": "start_agent", "payload": {"user_request": "2+3*4", "thread_id": "t1",
                                                           "context": {"k": [1, 2]}, "settings": {"x": True}}},
        "execute_agent": {"type": "execute_agent", "user_request": "hi", "thread_id": None},
        "start_agent_bad_thread": {"type": "start_agent", "user_request": "hi", "thread_id": "a\u0001b"},
        "user_message": {"type": "user_message", "payload": {"content": "hello", "references": ["doc1"]}},
        "chat_message": {"type": "chat_message", "message": "hi"},
        "message": {"type": "message", "text": "hi", "thread_id": "t" * 255},
        "user_input": {"type": "user_input", "payload": {"text": 5}},
        "chat": {"type": "chat", "content": "\u00e9\u20ac\U0001F600"},
        "stop_agent": {"type": "stop_agent", "message_id": "s1", "payload": {"run_id": "run_1"}},
        "stop_agent_no_run": {"type": "stop_agent"},
        "unknown_type": {"type": "dance", "message_id": "u"},
        "message_id_number": {"type": "ping", "message_id": 7},
        "no_type": {"message_id": "m"},
        "payload_not_object": {"type": "chat", "payload": "x", "content": "from root"},
    }
    for name, m in msgs.items():
        write("client_message", name, jdump(m))
    write("client_message", "array", b'[{"type":"ping"}]')
    write("client_message", "duplicate_keys", b'{"type":"ping","type":"heartbeat"}')
    write("client_message", "truncated", b'{"type":"ping"')
    write("client_message", "escapes", b'{"type":"p\\u0069ng","message_id":"\\ud83d\\ude00"}')


# ---- publish bodies ---------------------------------------------------------

def publish_body():
    base = {"user_id": "demo", "thread_id": "t1", "run_id": "r1"}
    events = {
        "agent_started": dict(base, type="agent_started", agent_name="demo"),
        "agent_thinking": dict(base, type="agent_thinking", reasoning="Looking it up"),
        "tool_executing": dict(base, type="tool_executing", tool_name="calculator",
                               parameters={"expression": "2+3*4"}),
        "tool_completed": dict(base, type="tool_completed", tool_name="calculator",
                               results={"value": 14}, duration=0.25),
        "agent_completed": dict(base, type="agent_completed", status="success", final_response="14"),
        "custom": {"user_id": "demo", "type": "build_finished", "data": {"ok": True}},
        "custom_idem": {"user_id": "demo", "type": "note", "idempotency_key": "k-1", "thread_id": "t"},
        "bad_type": {"user_id": "demo", "type": "Agent-Started"},
        "type_64": {"user_id": "demo", "type": "a" * 64},
        "type_65": {"user_id": "demo", "type": "a" * 65},
        "missing_run_id": {"user_id": "demo", "type": "agent_thinking", "thread_id": "t", "reasoning": "r"},
        "negative_duration": dict(base, type="tool_completed", tool_name="t", results=None, duration=-1),
        "bad_status": dict(base, type="agent_completed", status="done", final_response=""),
        "control_in_id": {"user_id": "de\u0007mo", "type": "x"},
        "no_user": {"type": "agent_thinking"},
        "idem_empty": {"user_id": "demo", "type": "x", "idempotency_key": ""},
    }
    for name, ev in events.items():
        write("publish_body", name, jdump(ev))
    batch = [events["agent_started"], events["agent_thinking"], events["bad_type"], 5, [],
             events["agent_completed"]]
    write("publish_body", "batch_mixed", jdump(batch))
    write("publish_body", "batch_empty", b"[]")
    write("publish_body", "batch_pretty", json.dumps([events["tool_completed"]], indent=2).encode())
    write("publish_body", "not_json", b"user_id=demo&type=x")
    write("publish_body", "duplicate_keys", b'{"user_id":"demo","type":"a","type":"b"}')
    write("publish_body", "scalar", b'"agent_started"')
    write("publish_body", "deep", b"[" * 64 + b"]" * 64)


def main():
    # Files are (over)written, never deleted: seeds added by hand stay.
    http()
    ws()
    utf8()
    jwt()
    client_message()
    publish_body()
    for t in sorted(os.listdir(CORPUS)):
        files = os.listdir(os.path.join(CORPUS, t))
        size = sum(os.path.getsize(os.path.join(CORPUS, t, f)) for f in files)
        print(f"corpus/{t}: {len(files)} files, {size} bytes")


if __name__ == "__main__":
    main()

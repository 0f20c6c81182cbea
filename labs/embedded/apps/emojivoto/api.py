"""emojivoto's data and wire formats: the emoji list of emoji-svc, the gRPC services of
BuoyantIO/emojivoto `proto/Emoji.proto` and `proto/Voting.proto` (package `emojivoto.v1`), their
messages encoded by hand in protobuf's wire format (no generated code: these few messages are
strings, an int32 and repeated sub-messages), and gRPC channels and servers for the twins.

gRPC goes through the pod's network path like the other twins' HTTP: a channel to the proxy of
`http_proxy` (a meshed pod's sidecar outbound listener, else the node forwarder) speaking HTTP/2
with the service as `:authority` (`emoji-svc.emojivoto:8080`), which the proxy routes like any
request. `grpc` is imported inside the functions that need it, so the fork server that preloads
the twins does not load gRPC's core before forking.
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .. import localhost
from ..http import wait_for_termination

if TYPE_CHECKING:
    import grpc

EMOJI_SERVICE = "emojivoto.v1.EmojiService"
VOTING_SERVICE = "emojivoto.v1.VotingService"
CALL_TIMEOUT = 10.0  # seconds; upstream's web calls with the HTTP request's context (no limit)

# (shortcode, unicode, VotingService method): emoji-svc's top100Emoji in its order, with the
# unicode of its emoji_codemap.go and the voting RPC web.go calls for it
# (BuoyantIO/emojivoto emojivoto-emoji-svc/emoji/emoji.go, emojivoto-voting-svc/api/api.go).
EMOJI: tuple[tuple[str, str, str], ...] = (
    (":joy:", "\U0001f602", "VoteJoy"),
    (":sunglasses:", "\U0001f60e", "VoteSunglasses"),
    (":doughnut:", "\U0001f369", "VoteDoughnut"),
    (":stuck_out_tongue_winking_eye:", "\U0001f61c", "VoteStuckOutTongueWinkingEye"),
    (":money_mouth_face:", "\U0001f911", "VoteMoneyMouthFace"),
    (":flushed:", "\U0001f633", "VoteFlushed"),
    (":mask:", "\U0001f637", "VoteMask"),
    (":nerd_face:", "\U0001f913", "VoteNerdFace"),
    (":ghost:", "\U0001f47b", "VoteGhost"),
    (":skull_and_crossbones:", "\u2620\ufe0f", "VoteSkullAndCrossbones"),
    (":heart_eyes_cat:", "\U0001f63b", "VoteHeartEyesCat"),
    (":hear_no_evil:", "\U0001f649", "VoteHearNoEvil"),
    (":see_no_evil:", "\U0001f648", "VoteSeeNoEvil"),
    (":speak_no_evil:", "\U0001f64a", "VoteSpeakNoEvil"),
    (":boy:", "\U0001f466", "VoteBoy"),
    (":girl:", "\U0001f467", "VoteGirl"),
    (":man:", "\U0001f468", "VoteMan"),
    (":woman:", "\U0001f469", "VoteWoman"),
    (":older_man:", "\U0001f474", "VoteOlderMan"),
    (":policeman:", "\U0001f46e", "VotePoliceman"),
    (":guardsman:", "\U0001f482", "VoteGuardsman"),
    (":construction_worker_man:", "\U0001f477", "VoteConstructionWorkerMan"),
    (":prince:", "\U0001f934", "VotePrince"),
    (":princess:", "\U0001f478", "VotePrincess"),
    (":man_in_tuxedo:", "\U0001f935", "VoteManInTuxedo"),
    (":bride_with_veil:", "\U0001f470", "VoteBrideWithVeil"),
    (":mrs_claus:", "\U0001f936", "VoteMrsClaus"),
    (":santa:", "\U0001f385", "VoteSanta"),
    (":turkey:", "\U0001f983", "VoteTurkey"),
    (":rabbit:", "\U0001f430", "VoteRabbit"),
    (":no_good_woman:", "\U0001f645", "VoteNoGoodWoman"),
    (":ok_woman:", "\U0001f646", "VoteOkWoman"),
    (":raising_hand_woman:", "\U0001f64b", "VoteRaisingHandWoman"),
    (":bowing_man:", "\U0001f647", "VoteBowingMan"),
    (":man_facepalming:", "\U0001f926\u200d\u2642", "VoteManFacepalming"),
    (":woman_shrugging:", "\U0001f937\u200d\u2640", "VoteWomanShrugging"),
    (":massage_woman:", "\U0001f486", "VoteMassageWoman"),
    (":walking_man:", "\U0001f6b6", "VoteWalkingMan"),
    (":running_man:", "\U0001f3c3", "VoteRunningMan"),
    (":dancer:", "\U0001f483", "VoteDancer"),
    (":man_dancing:", "\U0001f57a", "VoteManDancing"),
    (":dancing_women:", "\U0001f46f", "VoteDancingWomen"),
    (":rainbow:", "\U0001f308", "VoteRainbow"),
    (":skier:", "\u26f7", "VoteSkier"),
    (":golfing_man:", "\U0001f3cc", "VoteGolfingMan"),
    (":surfing_man:", "\U0001f3c4", "VoteSurfingMan"),
    (":basketball_man:", "\u26f9", "VoteBasketballMan"),
    (":biking_man:", "\U0001f6b4", "VoteBikingMan"),
    (":point_up_2:", "\U0001f446", "VotePointUp2"),
    (":vulcan_salute:", "\U0001f596", "VoteVulcanSalute"),
    (":metal:", "\U0001f918", "VoteMetal"),
    (":call_me_hand:", "\U0001f919", "VoteCallMeHand"),
    (":thumbsup:", "\U0001f44d", "VoteThumbsup"),
    (":wave:", "\U0001f44b", "VoteWave"),
    (":clap:", "\U0001f44f", "VoteClap"),
    (":raised_hands:", "\U0001f64c", "VoteRaisedHands"),
    (":pray:", "\U0001f64f", "VotePray"),
    (":dog:", "\U0001f436", "VoteDog"),
    (":cat2:", "\U0001f408", "VoteCat2"),
    (":pig:", "\U0001f437", "VotePig"),
    (":hatching_chick:", "\U0001f423", "VoteHatchingChick"),
    (":snail:", "\U0001f40c", "VoteSnail"),
    (":bacon:", "\U0001f953", "VoteBacon"),
    (":pizza:", "\U0001f355", "VotePizza"),
    (":taco:", "\U0001f32e", "VoteTaco"),
    (":burrito:", "\U0001f32f", "VoteBurrito"),
    (":ramen:", "\U0001f35c", "VoteRamen"),
    (":champagne:", "\U0001f37e", "VoteChampagne"),
    (":tropical_drink:", "\U0001f379", "VoteTropicalDrink"),
    (":beer:", "\U0001f37a", "VoteBeer"),
    (":tumbler_glass:", "\U0001f943", "VoteTumblerGlass"),
    (":world_map:", "\U0001f5fa", "VoteWorldMap"),
    (":beach_umbrella:", "\U0001f3d6", "VoteBeachUmbrella"),
    (":mountain_snow:", "\U0001f3d4", "VoteMountainSnow"),
    (":camping:", "\U0001f3d5", "VoteCamping"),
    (":steam_locomotive:", "\U0001f682", "VoteSteamLocomotive"),
    (":flight_departure:", "\U0001f6eb", "VoteFlightDeparture"),
    (":rocket:", "\U0001f680", "VoteRocket"),
    (":star2:", "\U0001f31f", "VoteStar2"),
    (":sun_behind_small_cloud:", "\U0001f324", "VoteSunBehindSmallCloud"),
    (":cloud_with_rain:", "\U0001f327", "VoteCloudWithRain"),
    (":fire:", "\U0001f525", "VoteFire"),
    (":jack_o_lantern:", "\U0001f383", "VoteJackOLantern"),
    (":balloon:", "\U0001f388", "VoteBalloon"),
    (":tada:", "\U0001f389", "VoteTada"),
    (":trophy:", "\U0001f3c6", "VoteTrophy"),
    (":iphone:", "\U0001f4f1", "VoteIphone"),
    (":pager:", "\U0001f4df", "VotePager"),
    (":fax:", "\U0001f4e0", "VoteFax"),
    (":bulb:", "\U0001f4a1", "VoteBulb"),
    (":money_with_wings:", "\U0001f4b8", "VoteMoneyWithWings"),
    (":crystal_ball:", "\U0001f52e", "VoteCrystalBall"),
    (":underage:", "\U0001f51e", "VoteUnderage"),
    (":interrobang:", "\u2049\ufe0f", "VoteInterrobang"),
    (":100:", "\U0001f4af", "Vote100"),
    (":checkered_flag:", "\U0001f3c1", "VoteCheckeredFlag"),
    (":crossed_swords:", "\u2694\ufe0f", "VoteCrossedSwords"),
    (":floppy_disk:", "\U0001f4be", "VoteFloppyDisk"),
    (":poop:", "\U0001f4a9", "VotePoop"),
)
VOTE_METHODS = {shortcode: method for shortcode, _, method in EMOJI}
UNICODE = {shortcode: unicode for shortcode, unicode, _ in EMOJI}


# --- protobuf wire format --------------------------------------------------------------------
def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32s are sign-extended to ten bytes
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field_bytes(number: int, data: bytes) -> bytes:
    """A length-delimited field (string or embedded message)."""
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def field_string(number: int, text: str) -> bytes:
    return field_bytes(number, text.encode()) if text else b""  # proto3 omits defaults


def field_int(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value) if value else b""


def fields(data: bytes) -> Iterator[tuple[int, bytes | int]]:
    """(field number, value) of a message: bytes for length-delimited fields, int for varints;
    ValueError on anything else or a truncated message."""
    pos = 0

    def varint() -> int:
        nonlocal pos
        shift = result = 0
        while True:
            if pos >= len(data):
                raise ValueError("truncated varint")
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return result

    while pos < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            yield number, varint()
        elif wire == 2:
            size = varint()
            if pos + size > len(data):
                raise ValueError("truncated field")
            yield number, data[pos:pos + size]
            pos += size
        else:
            raise ValueError(f"unexpected wire type {wire}")


def emoji_message(shortcode: str) -> bytes:
    """`Emoji {unicode = 1; shortcode = 2}`."""
    return field_string(1, UNICODE[shortcode]) + field_string(2, shortcode)


def emoji_of(message: bytes) -> dict[str, str]:
    out = {"unicode": "", "shortcode": ""}
    for number, value in fields(message):
        if isinstance(value, bytes) and number in (1, 2):
            out["unicode" if number == 1 else "shortcode"] = value.decode()
    return out


def string_field(message: bytes, number: int) -> str:
    for found, value in fields(message):
        if found == number and isinstance(value, bytes):
            return value.decode()
    return ""


# --- gRPC --------------------------------------------------------------------------------
def go_status(error: grpc.RpcError) -> str:
    """A failed call as grpc-go's error prints it: `rpc error: code = Unknown desc = ERROR`."""
    code = error.code()  # type: ignore[attr-defined]
    name = "OK" if code.name == "OK" else "".join(
        part.capitalize() for part in code.name.split("_"))
    return f"rpc error: code = {name} desc = {error.details()}"  # type: ignore[attr-defined]


def dial(target: str) -> grpc.Channel:
    """A channel to `host:port` through the pod's proxy (or directly, for `no_proxy` hosts):
    HTTP/2 to the proxy, the service as `:authority`. gRPC's own proxy support is off: it
    tunnels with CONNECT, which a sidecar's outbound listener does not accept."""
    import grpc

    host = target.rsplit(":", 1)[0]
    proxy = urllib.request.getproxies().get("http")
    options: list[tuple[str, object]] = [("grpc.enable_http_proxy", 0)]
    if proxy and not urllib.request.proxy_bypass(host):
        parsed = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        options.append(("grpc.default_authority", target))
        return grpc.insecure_channel(f"{parsed.hostname}:{parsed.port or 80}", options=options)
    return grpc.insecure_channel(target, options=options)


def unary(channel: grpc.Channel, service: str, method: str) -> Callable[[bytes], bytes]:
    """A unary call of `/service/method` taking and returning encoded messages."""
    call = channel.unary_unary(f"/{service}/{method}")

    def invoke(request: bytes) -> bytes:
        return call(request, timeout=CALL_TIMEOUT)
    return invoke


Handler = Callable[[bytes, "grpc.ServicerContext"], bytes]


def pod_port(variable: str) -> tuple[int, int]:
    """(the container port named by environment `variable`, where it listens on the host);
    SystemExit with upstream's message when unset, or when the pod does not declare it."""
    value = os.environ.get(variable, "")
    if not value:
        raise SystemExit(f"{variable} (currently [{value}]) environment variable must me set "
                         "to run the server.")
    try:
        port = int(value)
        bound = localhost.dial_port("127.0.0.1", port, os.environ)
    except ValueError:
        raise SystemExit(f"{variable}={value!r} is not a port number") from None
    except localhost.NotInPod:
        return port, port  # run by hand outside a pod: the port itself
    if bound is None:
        raise SystemExit(f"{variable}={value} is not a containerPort of this container: declare "
                         "it under `ports:` so the embedded runtime gives it a host port")
    return port, bound


def serve_grpc(service: str, handlers: dict[str, Handler], port: int, name: str) -> None:
    """Serve `handlers` (method -> handler of encoded messages) on 127.0.0.1:`port` until
    SIGTERM, as grpc-go's Serve does for the real services."""
    import grpc

    server = grpc.server(ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        service, {method: grpc.unary_unary_rpc_method_handler(handler)
                  for method, handler in handlers.items()}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    wait_for_termination(f"{name} gRPC server listening on 127.0.0.1:{port}")
    server.stop(1).wait()

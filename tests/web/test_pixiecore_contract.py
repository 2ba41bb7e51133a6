"""``GET /v1/boot/<mac>`` against pixiecore's API mode, as pixiecore's own
source reads the answer (pixiecore cannot be built here, so each rule
below is taken from it and asserted over real HTTP on loopback).

Source: github.com/google/netboot (formerly danderson/netboot), pixiecore/,
at commit fc2840fa7b05c2f2447452e0dcc35a5a76f6acfa (June 2021; the
repository's README says it is no longer actively developed).

- The request (pixiecore/booters.go, ``APIBooter`` and ``getAPIResponse``,
  lines 129-162): ``GET <api>/v1/boot/<mac>``, a ``/`` added to the API URL
  when it has none, the MAC as Go's ``net.HardwareAddr.String()`` writes it
  (lower-case, colons), with a 5 s timeout (``--api-request-timeout``,
  pixiecore/cli/apicmd.go line 58).
- Any non-200 answer, a timeout or a body that does not decode is an
  error, and an error makes pixiecore ignore the machine: it sends no
  proxyDHCP offer and the firmware goes on to its next boot device
  (booters.go 156-159, 180-182; pixiecore/pixiecore.go 123-125;
  pixiecore/dhcp.go 47-51; README.api.md "Any non-200 response" and
  "Malformed 200 responses").  The body of a non-200 answer is never read,
  so ``message`` reaches nobody there.
- The fields (booters.go 173-179, decoded by Go's encoding/json, whose
  names match case-insensitively): ``kernel`` string, ``initrd`` list of
  strings, ``cmdline`` string (or a deprecated object), ``message``
  string, and ``ipxe-script`` string, which, when not empty, replaces all
  the others (184-188).  A value of another type fails the decoding.
- URLs (booters.go 190-199 and ``makeURLAbsolute`` 311-324): a relative
  URL is resolved against ``<api>/v1`` (a path from the host's root, never
  under the API's path), then sealed into an ID; machines fetch
  ``<pixiecore>/_/file?name=<ID>`` and pixiecore fetches the URL itself
  with a plain ``http.Get`` (no Range), taking only a 200
  (``ReadBootFile``, 248-292), and passes the size on as Content-Length
  (pixiecore/http.go ``handleFile`` 121-143: without one "boot will be VERY
  slow").
- ``cmdline`` (booters.go 215-240; pixiecore.go ``expandCmdline`` 98-112;
  http.go ``ipxeScript`` 205-218): run through Go's text/template twice,
  first with a ``URL`` function (a URL to proxy, written
  ``{{ URL "http://..." }}``), whose output is run again with an ``ID``
  function; the result is trimmed and must hold no newline, or the machine
  is ignored.  pixiecore adds ``initrd=initrd<N>`` itself.  pxed's cmdline
  uses no template function: ``pxed.url`` must reach the management OS as
  written (it talks to pxed, not through pixiecore's proxy), so the text
  must come out of both passes unchanged.
- ``message`` is stored in the boot spec only (booters.go 201-203); this
  pixiecore prints it nowhere ("best-effort basis only", README.api.md).
- Multiple calls (README.api.md "Multiple calls"): pixiecore asks at DHCP
  time and again when iPXE asks it for a script; the answers must agree.
"""

from __future__ import annotations

import re
import time
from urllib.parse import urljoin, urlsplit

import pytest
import pytest_twisted

from pxed import config as pxed_config
from tests.helpers import MAC, Client, add_machine, queued

KERNEL = bytes(range(256)) * 64
INITRAMFS = b"070701" + bytes(range(251)) * 80
FIELDS = {"kernel": str, "initrd": list, "cmdline": str, "message": str}
# pixiecore/cli/apicmd.go: --api-request-timeout's default.
API_TIMEOUT = 5.0


@pytest.fixture
def static_dir(tmp_path):
    static = tmp_path / "static"
    (static / "mgmtos" / "x86_64").mkdir(parents=True)
    (static / "mgmtos" / "x86_64" / "vmlinuz").write_bytes(KERNEL)
    (static / "mgmtos" / "x86_64" / "initramfs").write_bytes(INITRAMFS)
    return static


def pixiecore_mac(mac: str) -> str:
    """The MAC as pixiecore puts it in the path (Go's HardwareAddr.String())."""
    return mac.lower().replace("-", ":")


def go_template_pass(template: str) -> str:
    """What Go's text/template prints for *template* when every action in
    it is a string constant ``{{"..."}}``: text runs verbatim to the next
    ``{{`` (go/src/text/template/parse/lex.go), each action prints its
    string.  Any other action (a function call, a trim marker, a comment)
    fails the test: pixiecore would call a function on it or refuse it."""
    out = []
    rest = template
    while True:
        text, delim, rest = rest.partition("{{")
        out.append(text)
        if not delim:
            return "".join(out)
        action = re.match(r'"([^"\\]*)"}}', rest)
        assert action, f"an action pixiecore would not print as text: {{{{{rest[:40]}"
        out.append(action.group(1))
        rest = rest[action.end() :]


def pixiecore_cmdline(cmdline: str) -> str:
    """The kernel command line pixiecore's iPXE script ends with: the
    answer's cmdline through its URL pass, then its ID pass, trimmed."""
    expanded = go_template_pass(go_template_pass(cmdline)).strip()
    assert "\n" not in expanded, "pixiecore ignores a machine whose cmdline has a newline"
    return expanded


async def ask(server, mac: str = MAC) -> tuple[int, bytes, dict | None]:
    """pixiecore's request for *mac*, against the API URL ``server.url``:
    the status, the body and (for a 200) the fields as pixiecore decodes
    them, checked for their types."""
    api = server.url
    api += "" if api.endswith("/") else "/"
    r = await Client("").get(f"{api}v1/boot/{pixiecore_mac(mac)}")
    if r.code != 200:
        return r.code, r.body, None
    answer = r.json()
    assert isinstance(answer, dict), r.text
    # encoding/json matches names case-insensitively: any spelling of
    # ipxe-script would replace the boot pxed means.
    assert {k.lower() for k in answer} <= set(FIELDS), answer
    for name, kind in FIELDS.items():
        assert isinstance(answer.get(name), kind), (name, answer)
    assert answer["kernel"], "pixiecore fails a spec without a kernel"
    assert all(isinstance(i, str) for i in answer["initrd"]), answer
    return r.code, r.body, answer


def fetched_url(server, url: str) -> str:
    """The URL pixiecore fetches for *url* (booters.go makeURLAbsolute)."""
    return urljoin(server.url.rstrip("/") + "/v1", url)


@pytest_twisted.ensureDeferred
async def test_a_machine_with_work_gets_an_answer_pixiecore_boots(start_server, static_dir):
    server = await start_server(static_dir=str(static_dir))
    await queued(server)

    started = time.monotonic()
    code, _, answer = await ask(server)
    # The first answer mints the machine credential; pixiecore waits 5 s.
    assert time.monotonic() - started < API_TIMEOUT
    assert code == 200
    assert answer is not None
    assert answer["message"].startswith("pxed: ")

    # pixiecore asks at DHCP time and again for the iPXE script.
    again = await ask(server, MAC.upper().replace(":", "-"))
    assert again[2] == answer

    cmdline = pixiecore_cmdline(answer["cmdline"])
    assert f"pxed.url={server.url}" in cmdline.split()
    assert f"pxed.mac={MAC}" in cmdline.split()
    assert not any(arg.startswith("initrd=") for arg in cmdline.split())
    # What the kernel gets is what pxed's own iPXE script gives it.
    script = (await server.anonymous.get(f"/ipxe/{MAC}")).text
    assert script.splitlines()[2].endswith(" " + cmdline)


@pytest_twisted.ensureDeferred
async def test_every_file_pixiecore_fetches_is_served_whole(start_server, static_dir):
    server = await start_server(static_dir=str(static_dir))
    await queued(server)
    _, _, answer = await ask(server)
    assert answer is not None

    wanted = [(answer["kernel"], KERNEL), *zip(answer["initrd"], [INITRAMFS], strict=True)]
    for url, content in wanted:
        # Absolute, so it does not depend on the API URL's path (a
        # relative one resolves from the host's root, not under it).
        assert urlsplit(url).scheme == "http", url
        assert fetched_url(server, url) == url
        # pixiecore's http.Get: no Range; only a 200 is taken.
        r = await Client("").get(url)
        assert r.code == 200, (url, r.code)
        assert r.length == len(content), "pixiecore passes the size on as Content-Length"
        assert r.body == content


@pytest_twisted.ensureDeferred
async def test_operator_cmdline_reaches_the_kernel_as_written(start_server, static_dir):
    written = 'console=ttyS0 note={{ URL "http://elsewhere/x" }} a={{b}} {{{{'
    server = await start_server(
        '[mgmtos.x86_64]\nkernel = "mgmtos/x86_64/vmlinuz"\n'
        'initrd = ["mgmtos/x86_64/initramfs"]\n'
        f"cmdline = '{written}'\n",
        static_dir=str(static_dir),
        boot_policy="always",
    )
    await add_machine(server)
    _, _, answer = await ask(server)
    assert answer is not None
    # Without escaping, pixiecore would proxy elsewhere/x, fail on {{b}}
    # (no such function) and ignore the machine.
    assert pixiecore_cmdline(answer["cmdline"]).startswith(written + " pxed.url=")


def test_a_cmdline_pixiecore_would_refuse_stops_pxed_at_start(tmp_path):
    path = tmp_path / "pxed.toml"
    path.write_text('[mgmtos.x86_64]\nkernel = "k"\ninitrd = []\ncmdline = """quiet\nro"""\n')
    with pytest.raises(pxed_config.ConfigError, match=r"mgmtos\.x86_64\.cmdline: must be one line"):
        pxed_config.load(path, {"data_dir": str(tmp_path / "data")})


@pytest_twisted.ensureDeferred
async def test_machines_pxed_does_not_boot_are_ignored_by_pixiecore(start_server, static_dir):
    server = await start_server(static_dir=str(static_dir), base_url="http://pxed.example:4848")
    unknown = "52:54:00:ab:cd:ef"
    await add_machine(server)  # on-demand policy, no work
    await add_machine(server, mac="52:54:00:00:00:02", name="unmanaged", managed=False)
    for mac, reason in [
        (unknown, "unknown MAC address"),
        (MAC, "no queued work"),
        ("52:54:00:00:00:02", "not managed"),
    ]:
        code, body, _ = await ask(server, mac)
        # Any non-200 and pixiecore makes no offer: the machine boots from
        # its disk.  The body is for a person reading it with curl.
        assert code == 404, (mac, body)
        assert reason in body.decode()
        assert b"kernel" not in body


@pytest_twisted.ensureDeferred
async def test_a_client_off_the_boot_networks_is_ignored(start_server, static_dir):
    server = await start_server(static_dir=str(static_dir), boot_networks=["10.99.0.0/16"])
    await queued(server)
    code, body, _ = await ask(server)
    assert code == 404
    assert b"pxed.token" not in body and b"kernel" not in body

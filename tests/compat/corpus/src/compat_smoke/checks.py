"""One check per distribution (and per runtime feature); each returns plain data."""

import asyncio
import io
import json
import os
import sys
import tempfile
import threading

CHECKS = {}


def check(fn):
    CHECKS[fn.__name__] = fn
    return fn


# ---- native extensions -------------------------------------------------------------


@check
def numpy_():
    import numpy as np

    a = np.arange(12, dtype=np.float64).reshape(3, 4)
    m = np.array([[4.0, 7.0], [2.0, 6.0]])
    # linalg goes through the OpenBLAS vendored in numpy.libs/
    return [a.sum(axis=0).tolist(), np.round(np.linalg.inv(m), 6).tolist(), str(a.dtype)]


@check
def pillow():
    from PIL import Image, ImageDraw, ImageFont, features

    img = Image.new("RGB", (64, 32), "white")
    ImageDraw.Draw(img).rectangle([4, 4, 20, 20], fill=(255, 0, 0))
    out = []
    for fmt in ("PNG", "JPEG", "WEBP"):  # zlib, libjpeg, libwebp from pillow.libs/
        buf = io.BytesIO()
        img.save(buf, fmt)
        buf.seek(0)
        out.append((fmt, Image.open(buf).size))
    font = ImageFont.load_default(size=12)  # FreeType, from pillow.libs/
    return [out, features.check("freetype2"), type(font).__name__, img.getpixel((10, 10))]


@check
def psycopg2():
    import psycopg2
    import psycopg2.extensions as ext

    return [ext.libpq_version() > 100000, ext.QuotedString("it's").getquoted().decode(), psycopg2.paramstyle]


@check
def pyzmq():
    import zmq

    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    a.bind("inproc://compat")
    b.connect("inproc://compat")
    a.send(b"ping")
    got = b.recv()
    a.close()
    b.close()
    ctx.term()
    return [got.decode(), zmq.zmq_version_info() >= (4, 0)]


@check
def lxml():
    from lxml import etree

    doc = etree.fromstring(b"<r><i n='1'>a</i><i n='2'>b</i></r>")
    xslt = etree.XSLT(
        etree.fromstring(
            b"<xsl:stylesheet version='1.0' xmlns:xsl='http://www.w3.org/1999/XSL/Transform'>"
            b"<xsl:template match='/'><o><xsl:value-of select='count(//i)'/></o></xsl:template>"
            b"</xsl:stylesheet>"
        )
    )
    return [doc.xpath("//i[@n='2']/text()"), str(xslt(doc)).strip()]


@check
def cryptography():
    from cryptography.fernet import Fernet
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    sig = key.sign(b"pykiln")
    h = hashes.Hash(hashes.SHA256())
    h.update(b"pykiln")
    f = Fernet(Fernet.generate_key())
    return [sig.hex()[:32], h.finalize().hex()[:16], f.decrypt(f.encrypt(b"secret")).decode()]


@check
def cffi():
    from cffi import FFI

    ffi = FFI()
    ffi.cdef("int abs(int); size_t strlen(const char *);")
    libc = ffi.dlopen(None)
    return [libc.abs(-7), libc.strlen(b"pykiln")]


@check
def orjson():
    import orjson

    return orjson.dumps({"b": [1, 2], "a": None}, option=orjson.OPT_SORT_KEYS).decode()


@check
def msgpack():
    import msgpack

    return msgpack.unpackb(msgpack.packb({"x": [1, 2.5, b"b"]}))["x"][:2]


@check
def markupsafe():
    from markupsafe import escape

    return str(escape("<a href='x'>&</a>"))


@check
def pyyaml():
    import yaml

    return [yaml.__with_libyaml__, yaml.load("a: [1, 2]\nb: {c: d}", Loader=yaml.CSafeLoader)]


@check
def regex():
    import regex

    return regex.findall(r"\p{Greek}+", "alpha βήτα gamma δέλτα")


@check
def charset_normalizer():
    from charset_normalizer import from_bytes

    best = from_bytes("Déjà vu, naïve café — ça marche très bien.".encode("utf-8")).best()
    return best.encoding


@check
def zstandard():
    import zstandard

    data = b"pykiln " * 100
    return zstandard.ZstdDecompressor().decompress(zstandard.ZstdCompressor().compress(data)) == data


@check
def brotli():
    import brotli

    return brotli.decompress(brotli.compress(b"hello " * 50)) == b"hello " * 50


@check
def bcrypt():
    import bcrypt

    h = bcrypt.hashpw(b"pw", b"$2b$04$abcdefghijklmnopqrstuu")
    return [h.decode(), bcrypt.checkpw(b"pw", h)]


@check
def rpds():
    from rpds import HashTrieMap

    m = HashTrieMap({"a": 1}).insert("b", 2)
    return sorted(m.items())


@check
def psutil():
    import psutil

    p = psutil.Process()
    return [p.pid == os.getpid(), psutil.cpu_count() >= 1, p.memory_info().rss > 0]


@check
def greenlet():
    from greenlet import greenlet

    seen = []
    g2 = greenlet(lambda: seen.append("two"))
    g1 = greenlet(lambda: (seen.append("one"), g2.switch(), seen.append("back")))
    g1.switch()
    return seen


@check
def sqlalchemy():
    from sqlalchemy import Column, Integer, String, create_engine, select
    from sqlalchemy.orm import Session, declarative_base

    Base = declarative_base()

    class Note(Base):
        __tablename__ = "notes"
        id = Column(Integer, primary_key=True)
        text = Column(String)

    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        s.add_all([Note(text="a"), Note(text="b")])
        s.commit()
        return s.scalars(select(Note.text).order_by(Note.id.desc())).all()


@check
def aiohttp():
    from aiohttp import ClientSession, web

    async def main():
        app = web.Application()
        app.router.add_get("/", lambda r: web.json_response({"ok": True}))
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            async with ClientSession() as s, s.get(f"http://127.0.0.1:{port}/") as r:
                return [r.status, await r.json()]
        finally:
            await runner.cleanup()

    return asyncio.run(main())


@check
def ujson():
    import ujson

    return ujson.dumps({"k": [1, "é"]}, ensure_ascii=False)


@check
def wrapt():
    import wrapt

    @wrapt.decorator
    def twice(wrapped, instance, args, kwargs):
        return wrapped(*args, **kwargs) * 2

    @twice
    def f(x):
        return x + 1

    return [f(3), f.__name__]


@check
def pynacl():
    from nacl.signing import SigningKey

    key = SigningKey(bytes(range(32)))
    return key.sign(b"pykiln").signature.hex()[:32]


@check
def soundfile():
    import numpy as np
    import soundfile

    buf = io.BytesIO()
    soundfile.write(buf, np.linspace(-0.5, 0.5, 80), 8000, format="WAV", subtype="PCM_16")
    buf.seek(0)
    data, rate = soundfile.read(buf)
    return [len(data), rate, soundfile.__libsndfile_version__.split(".")[0]]


@check
def glfw():
    import glfw  # ctypes.CDLL of glfw/x11/libglfw.so, found next to __file__

    return [glfw.get_version()[0], os.path.isfile(glfw._glfw._name)]


@check
def pydantic():
    from pydantic import BaseModel

    class M(BaseModel):
        x: int
        tags: list[str] = []

    return [M.model_validate({"x": "5"}).model_dump(), sorted(M.model_json_schema()["properties"])]


@check
def websockets():
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import serve

    async def main():
        async def echo(ws):
            async for msg in ws:
                await ws.send(msg[::-1])

        async with serve(echo, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            async with connect(f"ws://127.0.0.1:{port}") as ws:
                await ws.send("pykiln")
                return await ws.recv()

    import websockets.speedups  # noqa: F401 - the C extension

    return asyncio.run(main())


# ---- pure Python -------------------------------------------------------------------


def _http_server():
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"path": self.path}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@check
def requests():
    import requests

    srv = _http_server()
    try:
        r = requests.get(f"http://127.0.0.1:{srv.server_address[1]}/x?y=1", timeout=10)
        return [r.status_code, r.json(), os.path.isfile(requests.certs.where())]
    finally:
        srv.shutdown()


@check
def httpx():
    import httpx

    srv = _http_server()
    try:
        r = httpx.get(f"http://127.0.0.1:{srv.server_address[1]}/h", timeout=10)
        return [r.status_code, r.json()]
    finally:
        srv.shutdown()


@check
def click():
    import click
    from click.testing import CliRunner

    @click.command()
    @click.option("--n", type=int, default=2)
    def cli(n):
        click.echo("x" * n)

    return CliRunner().invoke(cli, ["--n", "3"]).output


@check
def jinja2():
    from jinja2 import Environment, PackageLoader

    env = Environment(loader=PackageLoader("compat_smoke", "templates"))
    return env.get_template("hello.txt").render(name="pykiln").strip()


@check
def attrs():
    import attrs

    @attrs.define
    class P:
        x: int
        y: int = 0

    return repr(P(1))


@check
def rich():
    from rich.console import Console
    from rich.table import Table

    t = Table("a", "b")
    t.add_row("1", "2")
    c = Console(file=io.StringIO(), width=30, color_system=None, force_terminal=False)
    c.print(t)
    return c.file.getvalue().splitlines()


@check
def dateutil():
    from datetime import datetime

    from dateutil import parser, tz
    from dateutil.zoneinfo import get_zonefile_instance  # packed tarball via get_data

    d = parser.parse("2024-03-10T12:00:00+01:00")
    zones = get_zonefile_instance().zones
    return [d.isoformat(), tz.tzutc().utcoffset(datetime(2024, 1, 1)).total_seconds(), "Europe/Paris" in zones]


@check
def pytz():
    from datetime import datetime

    import pytz  # opens zoneinfo/ files relative to __file__

    paris = pytz.timezone("Europe/Paris")
    return [str(paris.localize(datetime(2024, 7, 1, 12)).utcoffset()), len(pytz.all_timezones) > 400]


@check
def tzdata_zoneinfo():
    from datetime import datetime
    from importlib import resources
    from zoneinfo import ZoneInfo

    import tzdata

    raw = resources.files("tzdata.zoneinfo").joinpath("Asia/Tokyo").read_bytes()[:4]
    return [str(ZoneInfo("America/New_York").utcoffset(datetime(2024, 1, 1))), raw.decode(), bool(tzdata.IANA_VERSION)]


@check
def certifi():
    import ssl

    import certifi

    ctx = ssl.create_default_context(cafile=certifi.where())
    return [os.path.isfile(certifi.where()), ctx.cert_store_stats()["x509_ca"] > 50]


@check
def tomlkit():
    import tomlkit

    doc = tomlkit.parse('a = 1 # keep\n[t]\nb = "x"\n')
    doc["t"]["c"] = [1, 2]
    return tomlkit.dumps(doc)


@check
def jsonschema():
    import jsonschema

    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "required": ["a"]}
    errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors({})]
    jsonschema.validate({"a": 1}, schema)
    return errors


@check
def beautifulsoup4():
    from bs4 import BeautifulSoup

    html = "<p class='x'>one</p><p>two</p>"
    return [[p.text for p in BeautifulSoup(html, parser).find_all("p")] for parser in ("html.parser", "lxml")]


@check
def tabulate():
    from tabulate import tabulate

    return tabulate([[1, "a"], [22, "bb"]], headers=["n", "s"], tablefmt="github")


@check
def pygments():
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import get_lexer_by_name, get_lexer_for_filename

    html = highlight("x = 1", get_lexer_by_name("python"), HtmlFormatter(nowrap=True))
    return [html, get_lexer_for_filename("a.rs").name]


@check
def markdown():
    import markdown

    # 'tables' is resolved through the markdown.extensions entry point group
    return markdown.markdown("| a |\n|---|\n| 1 |\n\n*x*", extensions=["tables"])


@check
def platformdirs():
    import platformdirs

    return os.path.basename(platformdirs.user_cache_dir("compat", appauthor=False))


@check
def filelock():
    from filelock import FileLock

    with tempfile.TemporaryDirectory() as d:
        lock = FileLock(os.path.join(d, "x.lock"))
        with lock:
            return lock.is_locked


@check
def cachetools():
    from cachetools import LRUCache

    c = LRUCache(maxsize=2)
    for k in "abc":
        c[k] = k
    return sorted(c)


@check
def more_itertools():
    import more_itertools

    return list(more_itertools.chunked(range(7), 3))


@check
def sortedcontainers():
    from sortedcontainers import SortedList

    return list(SortedList([5, 1, 3]))


@check
def babel():
    from datetime import date

    from babel.dates import format_date  # locale-data/ opened relative to __file__
    from babel.numbers import format_decimal

    return [format_date(date(2024, 3, 1), locale="de_DE"), format_decimal(1234567.891, locale="fr_FR")]


@check
def docutils():
    from docutils.core import publish_string

    html = publish_string("Title\n=====\n\n*hi*", writer_name="html5").decode()
    return ["<em>hi</em>" in html, "<title>Title</title>" in html]


@check
def tqdm():
    from tqdm import tqdm

    out = io.StringIO()
    total = sum(tqdm(range(10), file=out, disable=False, mininterval=0))
    return [total, "10/10" in out.getvalue()]


# ---- the import system and the runtime ---------------------------------------------


@check
def olefile_():
    import importlib.util

    import olefile

    try:
        import olefile.olefile2  # noqa: F401 - Python 2 code: a SyntaxError in a venv too
        py2 = "imported"
    except SyntaxError as e:
        py2 = [type(e).__name__, e.lineno, os.path.basename(e.filename or "")]
    spec = importlib.util.find_spec("olefile.olefile2")
    source = spec.loader.get_source("olefile.olefile2")
    return [
        olefile.isOleFile(data=olefile.MAGIC + bytes(2048)),
        olefile.isOleFile(data=bytes(2048)),
        py2,
        "class OleFileIO" in source,
    ]


@check
def protobuf():
    from google.protobuf import struct_pb2
    from google.protobuf.internal import api_implementation

    msg = struct_pb2.Struct()
    msg.update({"name": "kiln", "temp": 1280, "glazes": ["celadon", "tenmoku"]})
    back = struct_pb2.Struct.FromString(msg.SerializeToString())
    # "upb": the native google/_upb/_message.abi3.so is what runs
    return [api_implementation.Type(), back["name"], back["temp"], list(back["glazes"])]


@check
def namespace_resources():
    # `google` is a PEP 420 namespace package (protobuf's google/_upb and
    # google/protobuf): importlib.resources lists it as a venv's directory does.
    from importlib.resources import files

    import google

    names = sorted(p.name for p in files("google").iterdir() if p.name != "__pycache__")
    return [names, google.__file__, files("google").joinpath("protobuf").is_dir()]


@check
def tokenizers_():
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"hello": 0, "world": 1, "[UNK]": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    enc = tok.encode("hello kiln world")
    # reads visualizer-styles.css beside __file__ at import: needs its on-disk view
    from tokenizers.tools import EncodingVisualizer, visualizer

    return [enc.ids, enc.tokens, "font-family" in visualizer.css, EncodingVisualizer.__name__]


@check
def resources_list_modules():
    # Plugin discovery through importlib.resources: a package's listing holds its
    # modules (`x.py`, the extension's file, subpackage directories) as in a venv.
    from importlib import resources

    def listing(pkg):
        return sorted(
            (p.name, p.is_dir(), p.is_file())
            for p in resources.files(pkg).iterdir()
            # bytecode caches and type stubs are not packed
            if p.name != "__pycache__" and not p.name.endswith(".pyi")
        )

    ext = resources.files("markdown") / "extensions"
    core = (resources.files("markdown") / "core.py").read_bytes()
    sub = sorted(p.name for p in ext.iterdir() if p.name.endswith(".py"))
    return [
        {pkg: listing(pkg) for pkg in ("jinja2", "markupsafe", "markdown", "olefile")},
        sub[:5],
        (ext / "tables.py").is_file(),
        core.count(b"class Markdown"),
    ]


@check
def metadata():
    from importlib import metadata

    dist = metadata.distribution("requests")
    scripts = {e.name for e in metadata.entry_points(group="console_scripts")}
    md_ext = {e.name for e in metadata.entry_points(group="markdown.extensions")}
    pd = metadata.packages_distributions()
    return [
        dist.version,
        dist.metadata["Name"],
        sorted(r.split(" ")[0].split(">")[0].split("<")[0].split("=")[0] for r in dist.requires or [] if "extra" not in r),
        any(str(f).endswith("requests/api.py") for f in dist.files),
        isinstance(dist, metadata.Distribution),
        dist.read_text("WHEEL") is not None,
        {"pygmentize", "tabulate", "compat-smoke"} <= scripts,
        "tables" in md_ext,
        sorted(pd["yaml"]),
        sorted(pd["PIL"]),
        metadata.version("compat-smoke"),
        len(list(metadata.distributions())) >= 50,
    ]


@check
def resources():
    from importlib import resources

    files = resources.files("compat_smoke")
    tmpl = files / "templates"
    with resources.as_file(files / "data.json") as p:
        on_disk = json.loads(open(p).read())
    with files.joinpath("data.json").open("rb") as f:
        head = f.read(1)
    return [
        sorted(x.name for x in tmpl.iterdir()),
        tmpl.is_dir(),
        (tmpl / "hello.txt").is_file(),
        (tmpl / "hello.txt").read_text().split()[0],
        on_disk["answer"],
        head.decode(),
        resources.read_text("compat_smoke", "data.json").count("answer"),
    ]


@check
def pkgutil_():
    import importlib
    import importlib.util
    import pkgutil

    import email
    import json as json_mod

    subs = sorted(m.name for m in pkgutil.iter_modules(json_mod.__path__))
    walked = [m.name for m in pkgutil.walk_packages(email.__path__, "email.")]
    data = pkgutil.get_data("compat_smoke", "data.json")
    spec = importlib.util.find_spec("xml.etree.ElementTree")
    import compat_smoke.workers as w

    reloaded = importlib.reload(w)
    return [
        subs,
        "email.mime.text" in walked,
        json.loads(data)["answer"],
        spec is not None and spec.name,
        reloaded.square(4),
        pkgutil.extend_path(["x"], "compat_smoke")[0] == "x",
    ]


@check
def file_relative():
    # The pattern PyOxidizer users hit: data next to the module via __file__.
    here = os.path.dirname(__file__)
    with open(os.path.join(here, "data.json")) as f:
        return json.load(f)["answer"]


@check
def plugin_discovery():
    import compat_plugins

    return compat_plugins.discover()


@check
def warning_source_line():
    # What a printed warning shows below its location: the line, read by linecache
    # from the file name alone (as warnings.formatwarning does).
    import linecache
    import warnings

    from compat_smoke import workers

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        workers.old_square(3)
    w = caught[0]
    return [str(w.message), os.path.basename(w.filename), linecache.getline(w.filename, w.lineno).strip()]


@check
def tracebacks():
    import inspect
    import traceback

    from compat_smoke import workers

    try:
        workers.square(None)
    except TypeError:
        tb = traceback.format_exc()
    return ["return x * x" in tb, inspect.getsource(workers.square).splitlines()[0]]


@check
def multiprocessing_():
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from compat_smoke import workers

    out = []
    for method in ("spawn", "forkserver", "fork"):
        with mp.get_context(method).Pool(2) as pool:
            out.append((method, pool.map(workers.square, range(5))))
    with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as ex:
        out.append(("pool", list(ex.map(workers.child_facts, range(2)))))
    return out


@check
def subprocess_threads_signals():
    import signal
    from concurrent.futures import ThreadPoolExecutor

    async def run():
        p = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", "echo sub", stdout=asyncio.subprocess.PIPE
        )
        out, _ = await p.communicate()
        return out.decode().strip()

    got = []
    old = signal.signal(signal.SIGUSR1, lambda s, f: got.append(s))
    os.kill(os.getpid(), signal.SIGUSR1)
    signal.signal(signal.SIGUSR1, old)
    with ThreadPoolExecutor(4) as ex:
        squares = list(ex.map(lambda x: x * x, range(6)))
    return [asyncio.run(run()), got == [signal.SIGUSR1], squares]


@check
def stdlib_native():
    import ctypes
    import ctypes.util
    import decimal
    import hashlib
    import lzma
    import sqlite3
    import ssl
    import zlib

    con = sqlite3.connect(":memory:")
    con.execute("create virtual table t using fts5(x)")
    return [
        sqlite3.sqlite_version_info >= (3, 40),
        hashlib.sha256(b"x").hexdigest()[:8],
        len(lzma.compress(b"a" * 100)) > 0,
        zlib.crc32(b"pykiln"),
        str(decimal.Decimal("1.10") + decimal.Decimal("2.205")),
        ctypes.sizeof(ctypes.c_void_p),
        ssl.create_default_context().cert_store_stats()["x509_ca"] > 0 or not os.path.exists("/etc/ssl/certs"),
    ]


@check
def python_version():
    return list(sys.version_info[:2])

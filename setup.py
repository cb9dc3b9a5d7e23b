"""Build hook: the per-packet and per-flow modules are compiled to C with mypyc.

The sources stay plain, type-checked Python and run unchanged without compilation (about half as
fast). Set RMM_SENSOR_PURE=1 to install without a C compiler. Everything else about the package
is declared in pyproject.toml.
"""

import os

from setuptools import setup

# The hot path: reader, decode, flow table, protocol parsers, fingerprints (and the signature
# schema the index reads per candidate), exploit checks and the per-flow record and session
# building. Command line, configuration and the live supervisor stay interpreted (they run
# once, or once per scrape).
COMPILED = [
    "sensor/addresses.py",
    "sensor/analysis.py",
    "sensor/capture/formats.py",
    "sensor/communityid.py",
    "sensor/decode/inet.py",
    "sensor/decode/link.py",
    "sensor/decode/sieve.py",
    "sensor/fingerprints/anydesk.py",
    "sensor/fingerprints/attribution.py",
    "sensor/fingerprints/detector.py",
    "sensor/fingerprints/screenconnect.py",
    "sensor/flows/deadlines.py",
    "sensor/flows/stream.py",
    "sensor/flows/table.py",
    "sensor/inspect.py",
    "sensor/model.py",
    "sensor/output/eve.py",
    "sensor/pipeline.py",
    "sensor/protocols/dns.py",
    "sensor/protocols/http.py",
    "sensor/protocols/ja4.py",
    "sensor/protocols/tls.py",
    "sensor/protocols/x509.py",
    "sensor/records.py",
    "sensor/rules/exploits.py",
    "sensor/sessions.py",
    "sensor/signatures/index.py",
    "sensor/signatures/schema.py",
    "sensor/text.py",
    "sensor/timestamps.py",
]

if os.environ.get("RMM_SENSOR_PURE"):
    setup()
else:
    from mypyc.build import mypycify

    setup(ext_modules=mypycify(COMPILED, opt_level="3", group_name="sensor_native"))

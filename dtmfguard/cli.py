"""The ``dtmfguard`` command: argument parsing, output and exit statuses of every subcommand.

Subcommands: ``detect`` (digits in a WAV file or a raw stream), ``mask`` (a recording with
every keypad tone replaced), ``audit`` (recordings checked for leaked DTMF), ``demo`` (the
product end to end on this machine), ``serve`` (the live proxy), ``gateway-sim`` (the reference
payment gateway) and ``audit-log verify`` (the capture audit trail's hash chain checked). The work
itself lives in :mod:`dtmfguard.offline`, :mod:`dtmfguard.demo`, :mod:`dtmfguard.gateway_sim` and
:mod:`dtmfguard.capture.audit`; this module only turns arguments into calls and results into
text. Every command takes ``--config FILE`` (TOML, see ``configs/default.toml``), before or
after the subcommand name.

Exit statuses: 0 success; 1 ``audit`` found a decodable digit (or the demo's claims did not
hold, or ``audit-log verify`` found a broken chain); 2 a usage error, a bad configuration file
or unusable input, reported on standard error as ``dtmfguard: error: <message>``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence

from dtmfguard import __version__
from dtmfguard.config import Config, load_config
from dtmfguard.errors import DtmfguardError
from dtmfguard.log import configure_logging, get_logger
from dtmfguard.offline import (
    EXIT_CLEAN,
    EXIT_ERROR,
    DetectorOptions,
    DigitReport,
    ProgressBar,
    audit_paths,
    detect_file,
    format_audit_table,
    mask_file,
    raw_chunks,
    replace_mode,
    stream_digits,
)
from dtmfguard.pipeline.mask import MaskMode, MaskSettings

PROG = "dtmfguard"
DEFAULT_DEMO_DIR = os.path.join("out", "demo")
DEFAULT_GATEWAY_SIM_DIR = os.path.join("out", "gateway-sim")
EXIT_INTERRUPTED = 130


class _UsageError(DtmfguardError):
    """Arguments that parse but do not make sense together."""


def _error(message: str) -> int:
    for line in message.splitlines() or [""]:
        print(f"{PROG}: error: {line}", file=sys.stderr)
    return EXIT_ERROR


def _warn(message: str) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr)


# --------------------------------------------------------------------------- detect


def _cmd_detect(args: argparse.Namespace, config: Config) -> int:
    options = DetectorOptions.from_config(config.detector)
    out = sys.stdout

    def emit(digit: DigitReport) -> None:
        line = json.dumps(digit.json_object()) if args.json else digit.text_line()
        out.write(line + "\n")
        out.flush()  # a reader of a live pipe sees each digit as soon as it ends

    if args.file is None and not args.raw:
        raise _UsageError("detect: give a WAV FILE, or '-' (or --raw) for raw s16le mono 8 kHz audio on standard input")
    if args.raw or args.file == "-":
        if args.file in (None, "-"):
            for digit in stream_digits(raw_chunks(sys.stdin.buffer), options):
                emit(digit)
        else:
            with open(args.file, "rb") as stream:
                for digit in stream_digits(raw_chunks(stream), options):
                    emit(digit)
        return EXIT_CLEAN
    digits, info = detect_file(args.file, options)
    if info.truncated:
        _warn(f"{args.file}: truncated file (data chunk shorter than its header says); read the audio it holds")
    for digit in digits:
        emit(digit)
    return EXIT_CLEAN


# --------------------------------------------------------------------------- mask


def _cmd_mask(args: argparse.Namespace, config: Config) -> int:
    settings = replace_mode(MaskSettings.from_config(config.masking), args.mode)
    if not settings.enabled:
        raise _UsageError(
            "mask: masking is turned off in the configuration ([masking] enabled = false): "
            "refusing to write an unmasked copy"
        )
    summary = mask_file(args.input, args.output, settings, DetectorOptions.from_config(config.detector))
    print(f"{PROG}: mask: {summary.describe(args.output)}", file=sys.stderr)
    return EXIT_CLEAN


# --------------------------------------------------------------------------- audit


def _cmd_audit(args: argparse.Namespace, config: Config) -> int:
    bar = ProgressBar(sys.stderr)
    try:
        report = audit_paths(args.paths, DetectorOptions.from_config(config.detector), progress=bar)
    finally:
        bar.close()
    for warning in report.warnings:
        _warn(warning)
    for line in format_audit_table(report, show_digits=args.show_digits):
        print(line)
    sys.stdout.flush()
    print(f"{PROG}: audit: {report.summary()}", file=sys.stderr)
    return report.exit_code


# --------------------------------------------------------------------------- demo, serve


def _cmd_demo(args: argparse.Namespace, config: Config) -> int:
    from dtmfguard.demo import run_demo  # the demo pulls in the speech corpus and synthesis

    return run_demo(args.out, config, sys.stdout, live=not args.offline)


def _cmd_serve(args: argparse.Namespace, config: Config) -> int:
    from dtmfguard.app import run  # the live proxy pulls in asyncio, the media relay and the kernels

    return run(config)


# --------------------------------------------------------------------------- gateway-sim, audit-log


EXIT_TAMPERED = 1


def _cmd_gateway_sim(args: argparse.Namespace, config: Config) -> int:
    from dtmfguard import gateway_sim  # imports cryptography, which the other commands do not need

    try:
        host, port = gateway_sim.parse_listen(args.listen)
    except ValueError as exc:
        raise _UsageError(f"gateway-sim: {exc}") from None

    def announce(sim: gateway_sim.GatewaySim) -> None:
        auth = "bearer token" if args.auth_token else ""
        if args.hmac_secret:
            auth = f"{auth} and HMAC signature" if auth else "HMAC signature"
        print(
            f"{PROG}: gateway-sim: listening on {sim.url} (CA file: {sim.ca_file}; "
            f"authentication: {auth or 'none'}); stop with Ctrl-C",
            file=sys.stderr,
            flush=True,
        )

    return gateway_sim.run(
        host, port, args.cert_dir, auth_token=args.auth_token, hmac_secret=args.hmac_secret, announce=announce
    )


def _cmd_audit_log_verify(args: argparse.Namespace, config: Config) -> int:
    from dtmfguard.capture.audit import check

    result = check(args.file)
    if result.ok:
        print(f"{args.file}: intact, {result.lines} lines")
        return EXIT_CLEAN
    print(f"{args.file}: broken at line {result.first_bad_line}: {result.reason}")
    return EXIT_TAMPERED


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``dtmfguard`` command and its subcommands."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="DTMF-masking media proxy for card payments by phone, and its offline tools.",
        epilog=(
            "Exit status: 0 success, 1 audit found DTMF digits (or audit-log verify a broken chain), "
            "2 usage error or unusable input."
        ),
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument(
        "--config", metavar="FILE", default=None, help="TOML configuration file (default: built-in defaults)"
    )
    # The same option after the subcommand name; SUPPRESS keeps it from overwriting the
    # top-level value when it is not given there.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help="TOML configuration file")

    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    detect = commands.add_parser(
        "detect",
        parents=[common],
        help="print the DTMF digits in a recording",
        description=(
            "Print one line per digit: DIGIT ONSET_MS CONFIRMED_MS DURATION_MS (milliseconds from "
            "the first sample; onset = estimated tone start, confirmed = when the detector committed)."
        ),
    )
    detect.add_argument(
        "file",
        nargs="?",
        metavar="FILE",
        help="WAV file (any common rate and format); '-' reads raw s16le mono 8 kHz from standard input",
    )
    detect.add_argument(
        "--raw",
        action="store_true",
        help="FILE (or standard input when FILE is absent or '-') holds raw s16le mono 8 kHz samples",
    )
    detect.add_argument("--json", action="store_true", help="print JSON lines instead of text")
    detect.set_defaults(handler=_cmd_detect)

    mask = commands.add_parser(
        "mask",
        parents=[common],
        help="write a recording with every keypad tone masked",
        description=(
            "Write OUT (16-bit PCM WAV, mono, 8 kHz) = IN with every keypad tone masked, same "
            "length and time-aligned with IN. Prints a one-line summary on standard error."
        ),
    )
    mask.add_argument("input", metavar="IN", help="WAV file to mask (any common rate and format)")
    mask.add_argument("output", metavar="OUT", help="masked WAV file to write")
    mask.add_argument(
        "--mode",
        choices=[m.value for m in MaskMode],
        default=None,
        help="what replaces a tone (default: [masking] mode, flat-tone)",
    )
    mask.set_defaults(handler=_cmd_mask)

    audit = commands.add_parser(
        "audit",
        parents=[common],
        help="scan recordings for decodable DTMF digits",
        description=(
            "Scan WAV files, and folders recursively for *.wav, for decodable DTMF. Prints a table "
            "of the files with digits (how many, and when; not which) or errors. Exit status 0: no "
            "digit found; 1: some file holds digits; 2: some file could not be checked."
        ),
    )
    audit.add_argument("paths", nargs="+", metavar="PATH", help="WAV file or folder")
    audit.add_argument(
        "--show-digits",
        action="store_true",
        help="also show the digits found (for test recordings only: real ones may hold card numbers)",
    )
    audit.set_defaults(handler=_cmd_audit)

    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="place a live call that pays by test card through the proxy, then mask and audit a recording",
        description=(
            "Start the reference payment gateway and the proxy (NG on [control] ng_listen, a free port if "
            "that one is taken) and place a real-time call through it over loopback: a capture is started "
            "over NG, the caller types the test card number 4111 1111 1111 1111 (one key as RFC 4733 "
            "events), an expiry and a security code; the agent's masked view is printed as it progresses "
            "and the gateway approves once. Checks with multimon-ng (`make deps`) that the agent heard no "
            "digit; then masks and audits a generated recording. Exits 1 when a claim does not hold."
        ),
    )
    demo.add_argument(
        "--out", metavar="DIR", default=DEFAULT_DEMO_DIR, help=f"folder for the files (default: {DEFAULT_DEMO_DIR})"
    )
    demo.add_argument(
        "--offline", action="store_true", help="skip the live call: only mask and audit a generated recording"
    )
    demo.set_defaults(handler=_cmd_demo)

    serve = commands.add_parser(
        "serve",
        parents=[common],
        help="run the live media proxy (NG control protocol, as rtpengine)",
        description=(
            "Serve the rtpengine NG control protocol on [control] ng_listen for Kamailio or OpenSIPS and "
            "relay each call's RTP with the caller's keypad tones masked. Stops cleanly (every call "
            "deleted) on SIGINT or SIGTERM."
        ),
    )
    serve.set_defaults(handler=_cmd_serve)

    sim = commands.add_parser(
        "gateway-sim",
        parents=[common],
        help="run the reference payment gateway (HTTPS, test card numbers only)",
        description=(
            "Serve the http-json gateway wire format over HTTPS with a self-signed certificate written "
            "to DIR/cert.pem (the CA file for clients) and DIR/key.pem. Approves the public test card "
            "numbers, declines 4000000000000002 and the other documented decline numbers, honours "
            "idempotency keys; POST /v1/_faults injects slowness, 5xx replies and dropped connections."
        ),
    )
    sim.add_argument(
        "--listen",
        metavar="HOST:PORT",
        default="127.0.0.1:8443",
        help="address to listen on (default: 127.0.0.1:8443; port 0 picks a free one)",
    )
    sim.add_argument(
        "--cert-dir",
        metavar="DIR",
        default=DEFAULT_GATEWAY_SIM_DIR,
        help=f"folder for cert.pem and key.pem, written at start (default: {DEFAULT_GATEWAY_SIM_DIR})",
    )
    sim.add_argument("--auth-token", metavar="TOKEN", default=None, help="require 'Authorization: Bearer TOKEN'")
    sim.add_argument(
        "--hmac-secret", metavar="SECRET", default=None, help="require an X-Signature HMAC-SHA256 made with SECRET"
    )
    sim.set_defaults(handler=_cmd_gateway_sim)

    audit_log = commands.add_parser(
        "audit-log",
        parents=[common],
        help="check the capture audit trail",
        description="Tools for the hash-chained capture audit log (JSON lines).",
    )
    audit_log_commands = audit_log.add_subparsers(dest="audit_log_command", metavar="ACTION", required=True)
    verify = audit_log_commands.add_parser(
        "verify",
        parents=[common],
        help="check the hash chain of an audit log",
        description=(
            "Check every line of FILE: its hash, its link to the line before, its number and its "
            "fields. Exit status 0: intact; 1: changed, removed or reordered lines (the first bad "
            "line is printed); 2: FILE cannot be read."
        ),
    )
    verify.add_argument("file", metavar="FILE", help="audit log (JSON lines)")
    verify.set_defaults(handler=_cmd_audit_log_verify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``dtmfguard`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed by argparse
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    try:
        config = load_config(args.config)
        configure_logging(config.log.level, config.log.format)
        get_logger().debug("command", command=args.command)
        code: int = args.handler(args, config)
        return code
    except DtmfguardError as exc:
        return _error(str(exc))
    except BrokenPipeError:
        # The reader went away (`dtmfguard detect - | head -1`): stop quietly. Point stdout at
        # /dev/null so the interpreter's final flush does not fail a second time.
        with contextlib.suppress(OSError, ValueError):  # stdout may not be a real file
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return _error(f"{where}{exc.strerror or exc}")
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

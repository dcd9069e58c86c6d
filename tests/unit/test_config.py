"""Tests of dtmfguard.config: defaults, partial files, and one precise error per mistake."""

from __future__ import annotations

import dataclasses
import re
import textwrap
import tomllib
from pathlib import Path

import pytest

from dtmfguard.config import Config, MaskingConfig, MediaConfig, load_config, parse_host_port
from dtmfguard.errors import ConfigError

DEFAULT_TOML = Path(__file__).resolve().parents[2] / "configs" / "default.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dtmfguard.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str) -> Config:
    return load_config(write(tmp_path, textwrap.dedent(text)))


class TestDefaults:
    def test_none_gives_defaults(self) -> None:
        assert load_config(None) == Config.defaults()

    def test_default_values(self) -> None:
        config = Config.defaults()
        assert config.log.level == "info"
        assert config.log.format == "auto"
        assert config.masking.enabled is True
        assert config.masking.mode == "flat-tone"
        assert config.masking.delay_ms == 20
        assert config.masking.flat_tone_hz == 500.0
        assert config.masking.ramp_ms == 2.0
        assert config.detector.min_level_dbm0 == -36.0
        assert config.control.ng_address == ("127.0.0.1", 22222)
        assert (config.media.port_min, config.media.port_max) == (30000, 40000)
        assert config.media.caller_side == "offer"
        assert not config.recording.enabled
        assert not config.metrics.enabled
        assert config.metrics.address is None

    def test_empty_file_gives_defaults(self, tmp_path: Path) -> None:
        assert load_text(tmp_path, "") == Config.defaults()

    def test_default_toml_is_exactly_the_defaults(self) -> None:
        assert load_config(DEFAULT_TOML) == Config.defaults()

    def test_default_toml_documents_every_key(self) -> None:
        """Every field appears in configs/default.toml, under a comment giving its default."""
        data = tomllib.loads(DEFAULT_TOML.read_text(encoding="utf-8"))
        config = Config.defaults()
        expected = {
            section.name: {f.name for f in dataclasses.fields(getattr(config, section.name))}
            for section in dataclasses.fields(config)
        }
        assert {name: set(table) for name, table in data.items()} == expected

        lines = DEFAULT_TOML.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            match = re.match(r"(\w+) = (.+)", line)
            if match:
                assert lines[number - 1] == f"# Default: {match.group(2)}", f"line {number + 1}: {line}"
                assert lines[number - 2].startswith("# "), f"line {number + 1}: {match.group(1)} is not described"

    def test_config_is_frozen(self) -> None:
        config = Config.defaults()
        with pytest.raises(dataclasses.FrozenInstanceError):
            config.masking.delay_ms = 40  # type: ignore[misc]


class TestPartialFile:
    def test_keys_left_out_take_defaults(self, tmp_path: Path) -> None:
        config = load_text(
            tmp_path,
            """
            [masking]
            delay_ms = 40
            mode = "silence"

            [media]
            port_min = 20000
            port_max = 20100
            """,
        )
        assert config.masking.delay_ms == 40
        assert config.masking.mode == "silence"
        assert config.masking.flat_tone_hz == 500.0
        assert (config.media.port_min, config.media.port_max) == (20000, 20100)
        assert config.media.timeout_s == 60.0
        assert config.log == Config.defaults().log
        assert config.detector == Config.defaults().detector

    def test_integer_given_for_a_number_becomes_float(self, tmp_path: Path) -> None:
        config = load_text(tmp_path, "[masking]\nflat_tone_hz = 450\n[media]\ntimeout_s = 5\n")
        assert config.masking.flat_tone_hz == 450.0
        assert isinstance(config.masking.flat_tone_hz, float)
        assert isinstance(config.media.timeout_s, float)

    def test_enabled_sections(self, tmp_path: Path) -> None:
        config = load_text(tmp_path, '[recording]\ndir = "rec"\n[metrics]\nlisten = "[::1]:9090"\n')
        assert config.recording.enabled
        assert config.metrics.address == ("::1", 9090)


def assert_error(tmp_path: Path, text: str, message: str) -> None:
    """Loading ``text`` fails with exactly ``message`` after the file name."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: {message}"


class TestUnknownNames:
    def test_unknown_key(self, tmp_path: Path) -> None:
        assert_error(tmp_path, "[masking]\nfoo = 1\n", "unknown key 'masking.foo'")

    def test_unknown_section(self, tmp_path: Path) -> None:
        assert_error(tmp_path, "[maskin]\ndelay_ms = 20\n", "unknown section 'maskin'")

    def test_top_level_key_is_an_unknown_section(self, tmp_path: Path) -> None:
        assert_error(tmp_path, "delay_ms = 20\n", "unknown section 'delay_ms'")

    def test_section_that_is_not_a_table(self, tmp_path: Path) -> None:
        assert_error(tmp_path, "log = 3\n", "log: must be a table ([log]), got 3")

    def test_every_problem_is_reported(self, tmp_path: Path) -> None:
        path = write(tmp_path, "[masking]\nfoo = 1\n[log]\nlevel = 'loud'\n[x]\n")
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert str(info.value).splitlines() == [
            f"{path}: unknown key 'masking.foo'",
            f"{path}: log.level: must be one of 'debug', 'info', 'warning', 'error', got 'loud'",
            f"{path}: unknown section 'x'",
        ]


class TestWrongType:
    @pytest.mark.parametrize(
        ("text", "message"),
        [
            (
                "[masking]\ndelay_ms = 'x'\n",
                "masking.delay_ms: must be an integer between 10 and 200 and a multiple of 5, got 'x'",
            ),
            (
                "[masking]\ndelay_ms = 20.0\n",
                "masking.delay_ms: must be an integer between 10 and 200 and a multiple of 5, got 20.0",
            ),
            ("[masking]\nenabled = 'yes'\n", "masking.enabled: must be true or false, got 'yes'"),
            ("[masking]\nenabled = 1\n", "masking.enabled: must be true or false, got 1"),
            ("[media]\nport_min = true\n", "media.port_min: must be an integer between 1024 and 65535, got true"),
            (
                "[masking]\nflat_tone_hz = '500'\n",
                "masking.flat_tone_hz: must be a number between 100 and 3400, got '500'",
            ),
            ("[masking]\npre_pad_ms = nan\n", "masking.pre_pad_ms: must be a number between 0 and 5, got nan"),
            ("[recording]\ndir = 0\n", "recording.dir: must be a string, got 0"),
            (
                "[masking]\nmode = 'beep'\n",
                "masking.mode: must be one of 'flat-tone', 'silence', 'comfort-noise', got 'beep'",
            ),
            ("[log]\nformat = ['json']\n", "log.format: must be one of 'auto', 'json', 'console', got ['json']"),
        ],
    )
    def test_message_names_key_and_reason(self, tmp_path: Path, text: str, message: str) -> None:
        assert_error(tmp_path, text, message)


class TestRange:
    @pytest.mark.parametrize(
        ("text", "message"),
        [
            (
                "[masking]\ndelay_ms = 5\n",
                "masking.delay_ms: must be an integer between 10 and 200 and a multiple of 5, got 5",
            ),
            (
                "[masking]\ndelay_ms = 22\n",
                "masking.delay_ms: must be an integer between 10 and 200 and a multiple of 5, got 22",
            ),
            (
                "[masking]\nflat_tone_level_dbm0 = 0\n",
                "masking.flat_tone_level_dbm0: must be a number between -60 and -6, got 0",
            ),
            (
                "[detector]\nmax_normal_twist_db = 16.5\n",
                "detector.max_normal_twist_db: must be a number between 0 and 16, got 16.5",
            ),
            (
                "[detector]\nmin_digit_ms = 19\n",
                "detector.min_digit_ms: must be a number between 20 and 40, got 19",
            ),
            ("[media]\ntimeout_s = 0\n", "media.timeout_s: must be a number greater than 0, got 0"),
            ("[media]\nport_max = 70000\n", "media.port_max: must be an integer between 1024 and 65535, got 70000"),
            ("[media]\nport_min = 30001\n", "media.port_min: must be even (RTP takes even ports), got 30001"),
            (
                "[media]\nport_min = 40000\nport_max = 40000\n",
                "media.port_max: must be greater than port_min (40000), got 40000",
            ),
            (
                "[masking]\nramp_ms = 5\n",
                "masking.ramp_ms: must not exceed pre_pad_ms (3.5) or post_pad_ms (8), got 5.0",
            ),
            (
                "[masking]\nflat_tone_hz = 1250\n",
                "masking.flat_tone_hz: must not be within 5 % of a DTMF frequency (1209 Hz), got 1250.0",
            ),
        ],
    )
    def test_message_names_key_and_reason(self, tmp_path: Path, text: str, message: str) -> None:
        assert_error(tmp_path, text, message)

    @pytest.mark.parametrize("dtmf_hz", [697, 770, 852, 941, 1209, 1336, 1477, 1633])
    def test_flat_tone_near_any_dtmf_frequency_is_refused(self, dtmf_hz: int) -> None:
        for offset in (-0.049, 0.0, 0.049):
            with pytest.raises(ConfigError, match=r"^masking\.flat_tone_hz: must not be within 5 %"):
                MaskingConfig(flat_tone_hz=dtmf_hz * (1 + offset))

    def test_flat_tone_just_outside_the_band_is_accepted(self) -> None:
        assert MaskingConfig(flat_tone_hz=697 * 0.94).flat_tone_hz == pytest.approx(655.18)

    def test_edges_of_ranges_are_accepted(self) -> None:
        MaskingConfig(delay_ms=10, pre_pad_ms=0, post_pad_ms=0, ramp_ms=0)
        MaskingConfig(delay_ms=200, pre_pad_ms=5, post_pad_ms=20, ramp_ms=5)
        MediaConfig(port_min=1024, port_max=65535)

    def test_sections_built_in_code_are_checked_too(self) -> None:
        with pytest.raises(ConfigError, match=r"^masking\.delay_ms: "):
            MaskingConfig(delay_ms=7)


class TestHostPort:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("127.0.0.1:22222", ("127.0.0.1", 22222)),
            ("0.0.0.0:0", ("0.0.0.0", 0)),
            ("localhost:9090", ("localhost", 9090)),
            ("ng.example.net:2223", ("ng.example.net", 2223)),
            ("[::1]:22222", ("::1", 22222)),
        ],
    )
    def test_valid(self, value: str, expected: tuple[str, int]) -> None:
        assert parse_host_port(value) == expected

    @pytest.mark.parametrize(
        ("value", "why"),
        [
            ("127.0.0.1", ", got '127.0.0.1'"),
            (":22222", ", got ':22222'"),
            ("127.0.0.1:", " with a port between 0 and 65535, got '127.0.0.1:'"),
            ("127.0.0.1:65536", " with a port between 0 and 65535, got '127.0.0.1:65536'"),
            ("127.0.0.1:-1", " with a port between 0 and 65535, got '127.0.0.1:-1'"),
            ("127.0.0.1:http", " with a port between 0 and 65535, got '127.0.0.1:http'"),
            ("::1:22222", ": an IPv6 address goes in brackets, got '::1:22222'"),
            ("[zz::1]:22222", ": 'zz::1' is not an IPv6 address, got '[zz::1]:22222'"),
            ("300.1.1.1:22222", ": '300.1.1.1' is not an IP address or host name, got '300.1.1.1:22222'"),
            ("bad_host:22222", ": 'bad_host' is not an IP address or host name, got 'bad_host:22222'"),
        ],
    )
    def test_invalid_in_file(self, tmp_path: Path, value: str, why: str) -> None:
        assert_error(
            tmp_path,
            f"[control]\nng_listen = '{value}'\n",
            f"control.ng_listen: must be 'host:port' (IPv6 as '[addr]:port'){why}",
        )

    def test_metrics_listen_may_be_empty_but_not_bad(self, tmp_path: Path) -> None:
        assert load_text(tmp_path, "[metrics]\nlisten = ''\n").metrics.address is None
        assert_error(
            tmp_path,
            "[metrics]\nlisten = '9090'\n",
            "metrics.listen: must be 'host:port' (IPv6 as '[addr]:port'), got '9090'",
        )

    def test_media_interface_must_be_an_address(self, tmp_path: Path) -> None:
        assert load_text(tmp_path, "[media]\ninterface = '::1'\n").media.interface == "::1"
        assert_error(
            tmp_path, "[media]\ninterface = 'eth0'\n", "media.interface: must be an IPv4 or IPv6 address, got 'eth0'"
        )


class TestUnreadable:
    def test_missing_file(self, tmp_path: Path) -> None:
        path = tmp_path / "nope.toml"
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert str(info.value) == f"{path}: cannot read: No such file or directory"

    def test_directory(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match=r": cannot read: Is a directory$"):
            load_config(tmp_path)

    def test_garbled_toml_names_file_and_line(self, tmp_path: Path) -> None:
        path = write(tmp_path, "[masking]\ndelay_ms = 20\nmode = flat-tone\n")
        with pytest.raises(ConfigError) as info:
            load_config(str(path))
        message = str(info.value)
        assert message.startswith(f"{path}: invalid TOML: ")
        assert "line 3" in message

    def test_unclosed_table_header(self, tmp_path: Path) -> None:
        path = write(tmp_path, "[log]\nlevel = 'info'\n\n[masking\n")
        with pytest.raises(ConfigError, match=r"invalid TOML: .*line 4"):
            load_config(path)

    def test_not_utf8_names_file_and_line(self, tmp_path: Path) -> None:
        path = tmp_path / "latin1.toml"
        path.write_bytes(b"[recording]\n# caf\xe9\ndir = ''\n")
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert str(info.value) == f"{path}: not UTF-8 text (at line 2)"


class TestCaptureAndGateway:
    def test_defaults(self) -> None:
        config = Config.defaults()
        assert config.capture.trigger_digits == ""
        assert config.capture.currency == "GBP"
        assert config.capture.show_bin is False
        assert config.capture.max_retries == 3
        assert config.capture.audit_log == ""
        assert config.gateway.connector == "http-json"
        assert not config.gateway.enabled
        assert config.gateway.timeout_s == 10.0

    def test_values_from_file(self, tmp_path: Path) -> None:
        config = load_text(
            tmp_path,
            """
            [capture]
            trigger_digits = "*9"
            currency = "EUR"
            field_timeout_s = 5
            [gateway]
            url = "https://pay.example.com/api"
            auth_token = "secret-token"
            """,
        )
        assert config.capture.trigger_digits == "*9"
        assert config.capture.currency == "EUR"
        assert config.capture.field_timeout_s == 5.0
        assert config.gateway.enabled
        assert config.gateway.connector_settings() == {
            "connector": "http-json",
            "url": "https://pay.example.com/api",
            "auth_token": "secret-token",
            "timeout_s": 10.0,
        }

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ('[capture]\ntrigger_digits = "9x"', "capture.trigger_digits: must be up to 8 keypad keys"),
            ('[capture]\ntrigger_digits = "*********"', "capture.trigger_digits: must be up to 8 keypad keys"),
            ('[capture]\ncurrency = "gbp"', "capture.currency: must be an ISO 4217 code"),
            ("[capture]\nmax_retries = 11", "capture.max_retries: must be an integer between 0 and 10"),
            ("[capture]\nfield_timeout_s = 0", "capture.field_timeout_s: must be a number between 1 and 600"),
            (
                "[capture]\nfield_timeout_s = 60\ncapture_timeout_s = 30",
                "capture.capture_timeout_s: must not be shorter than field_timeout_s (60)",
            ),
            ("[gateway]\ntimeout_s = 0", "gateway.timeout_s: must be a number greater than 0"),
            ("[gateway]\nurl = 1", "gateway.url: must be a string"),
        ],
    )
    def test_errors(self, tmp_path: Path, text: str, message: str) -> None:
        path = write(tmp_path, text)
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert str(info.value).startswith(f"{path}: {message}")

"""
The deployment files in ``deploy/``: the systemd unit, the Dockerfile, the
Prometheus alert rules and the Grafana dashboard.

The tools that check them (``systemd-analyze``, ``promtool``) are used when
they are installed (``.ci/run`` installs them) and the tests that need them
are skipped otherwise.  No test builds the container image: that needs a
Docker engine; the Dockerfile's instructions are checked instead.
"""

from __future__ import annotations

import configparser
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Set, Tuple

import promql_parser
import treq
import yaml
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from ivrproto.config import IntakeConfig

from .test_integration import ServiceTestCase

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "systemd" / "ivrproto.service"
DOCKERFILE = DEPLOY / "Dockerfile"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts_test.yml"
DASHBOARD = DEPLOY / "grafana" / "ivrproto.json"

DEFAULTS = IntakeConfig()
#: Series that Prometheus itself adds for every target it scrapes.
PROMETHEUS_OWN = {"up"}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SkipTest(f"{name} is not installed")
    return path


def _run(*argv: str, stdin: str = "") -> "subprocess.CompletedProcess[str]":
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=120)


# --- systemd ----------------------------------------------------------------


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    return parser


class SystemdUnitTests(SynchronousTestCase):
    """
    ``deploy/systemd/ivrproto.service``.
    """

    def test_runs_twistd_in_the_foreground(self) -> None:
        """ExecStart runs twistd ivr in the foreground, without a pid file, on the system config."""
        argv = shlex.split(_unit()["Service"]["ExecStart"])
        self.assertTrue(argv[0].startswith("/") and argv[0].endswith("/twistd"), argv)
        self.assertEqual(argv[1:6], ["-n", "--pidfile=", "ivr", "--config", "/etc/ivrproto/ivr.toml"])

    def test_service_settings(self) -> None:
        """Non-root, restarts on failure, SIGTERM drains within the stop timeout, SIGHUP reloads."""
        service = _unit()["Service"]
        self.assertNotIn(service.get("User", "root"), ("root", "0"))
        self.assertEqual(service["Restart"], "on-failure")
        self.assertEqual(service["KillSignal"], "SIGTERM")
        self.assertGreater(float(service["TimeoutStopSec"]), DEFAULTS.drain_deadline)
        self.assertEqual(service["ExecReload"], "/bin/kill -HUP $MAINPID")
        self.assertTrue(service["EnvironmentFile"].startswith("/etc/ivrproto/"))
        text = UNIT.read_text()
        for variable in ("CLIENT_ID=", "CLIENT_SECRET=", "IVR_INTAKE_SECRET="):
            self.assertIn(variable, text)

    def _verify(self, unit_text: str) -> "subprocess.CompletedProcess[str]":
        """
        ``systemd-analyze verify`` on the unit, with twistd at this
        environment's path (verify checks that the command exists).
        """
        analyze = _tool("systemd-analyze")
        twistd = Path(sys.executable).parent / "twistd"
        if not twistd.exists():
            raise SkipTest(f"no {twistd}")
        unit_text = re.sub(r"^ExecStart=\S+/twistd", f"ExecStart={twistd}", unit_text, flags=re.M)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / UNIT.name
            path.write_text(unit_text)
            return _run(analyze, "verify", "--man=no", str(path))

    def test_systemd_analyze_verify(self) -> None:
        """systemd-analyze verify finds nothing to say about the unit."""
        result = self._verify(UNIT.read_text())
        self.assertEqual((result.returncode, result.stderr), (0, ""))

    def test_verify_notices_a_bad_unit(self) -> None:
        """The verify check above would see a mistake (a signal that does not exist)."""
        result = self._verify(UNIT.read_text().replace("KillSignal=SIGTERM", "KillSignal=SIGTREM"))
        self.assertIn("SIGTREM", result.stderr)


# --- Dockerfile ---------------------------------------------------------------


def _instructions() -> List[Tuple[str, str]]:
    """
    The Dockerfile's instructions as (keyword, arguments), continuation
    lines joined and comments dropped.
    """
    instructions: List[Tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), " ".join(arguments.split())))
        pending = ""
    return instructions


class DockerfileTests(SynchronousTestCase):
    """
    ``deploy/Dockerfile``, checked instruction by instruction (building the
    image needs a Docker engine).
    """

    def test_slim_python_base(self) -> None:
        """The image starts from a slim Python image that the package supports."""
        [base] = [args for keyword, args in _instructions() if keyword == "FROM"]
        match = re.fullmatch(r"python:(3\.\d+)-slim(-\w+)?", base)
        self.assertIsNotNone(match, base)

    def test_installs_the_package_and_builds_the_plugin_cache(self) -> None:
        """pip install . from the copied tree, then the plugin cache, both before dropping root."""
        instructions = _instructions()
        keywords = [k for k, _ in instructions]
        runs = [i for i, (k, args) in enumerate(instructions) if k == "RUN"]
        [install] = [i for i in runs if re.search(r"\bpip install \.(\s|$)", instructions[i][1])]
        [cache] = [i for i in runs if "getPlugins(IPlugin)" in instructions[i][1]]
        user = keywords.index("USER")
        self.assertLess(install, cache)
        self.assertLess(cache, user)
        copied = {
            source
            for keyword, args in instructions if keyword == "COPY"
            for source in args.split()[:-1]
        }
        project = _pyproject_project()
        needed = {"pyproject.toml", "ivrproto", "twisted", project["readme"], *project["license-files"]}
        self.assertEqual(needed - copied, set())
        for source in copied:
            self.assertTrue((ROOT / source).exists(), source)

    def test_runs_as_non_root(self) -> None:
        """The last USER is not root."""
        users = [args for keyword, args in _instructions() if keyword == "USER"]
        self.assertTrue(users)
        self.assertNotIn(users[-1].split(":")[0], ("root", "0"))

    def test_command_signal_and_probes(self) -> None:
        """twistd ivr in the foreground, SIGTERM to stop, a health check on /healthz."""
        instructions = dict(_instructions())
        self.assertEqual(json.loads(instructions["ENTRYPOINT"]), ["twistd", "--nodaemon", "--pidfile=", "ivr"])
        command = json.loads(instructions["CMD"])
        self.assertEqual(command[:2], ["--config", "/etc/ivrproto/ivr.toml"])
        self.assertEqual(instructions["STOPSIGNAL"], "SIGTERM")
        self.assertIn("http://127.0.0.1:8080/healthz", instructions["HEALTHCHECK"])
        self.assertIn("EXPOSE", instructions)

    def test_notes_probes_and_grace_period(self) -> None:
        """The notes name both probes and a grace period longer than drain_deadline."""
        text = DOCKERFILE.read_text()
        self.assertIn("/healthz", text)
        self.assertIn("/readyz", text)
        [grace] = re.findall(r"terminationGracePeriodSeconds: (\d+)", text)
        self.assertGreater(int(grace), DEFAULTS.drain_deadline)


def _pyproject_project() -> Dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    with open(ROOT / "pyproject.toml", "rb") as f:
        project: Dict[str, Any] = tomllib.load(f)["project"]
    return project


# --- Prometheus rules -------------------------------------------------------


def _alert_rules() -> List[Dict[str, Any]]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [rule for group in rules["groups"] for rule in group["rules"]]


class AlertRuleTests(SynchronousTestCase):
    """
    ``deploy/prometheus/alerts.yml`` and its unit tests.
    """

    def test_promtool_check_rules(self) -> None:
        """promtool check rules accepts the rules."""
        result = _run(_tool("promtool"), "check", "rules", str(ALERTS))
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_promtool_test_rules(self) -> None:
        """promtool test rules: every alert fires where it should and stays quiet where it should."""
        result = _run(_tool("promtool"), "test", "rules", str(ALERT_TESTS))
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_each_alert_has_a_firing_and_a_quiet_case(self) -> None:
        """alerts_test.yml has, for each alert, a case where it fires and one where it does not."""
        tests = yaml.safe_load(ALERT_TESTS.read_text())
        self.assertEqual(tests["rule_files"], [ALERTS.name])
        firing: Set[str] = set()
        quiet: Set[str] = set()
        for case in tests["tests"]:
            for check in case["alert_rule_test"]:
                (firing if check["exp_alerts"] else quiet).add(check["alertname"])
        alerts = {rule["alert"] for rule in _alert_rules()}
        self.assertEqual(len(alerts), len(_alert_rules()))
        self.assertEqual((firing, quiet), (alerts, alerts))

    def test_thresholds_follow_the_defaults(self) -> None:
        """Capacity and lag alerts use the defaults of max_active_calls and max_loop_lag."""
        expressions = {rule["alert"]: rule["expr"].strip() for rule in _alert_rules()}
        self.assertEqual(
            expressions["IvrNearCapacity"], f"ivr_calls_active > {int(0.8 * DEFAULTS.max_active_calls)}"
        )
        self.assertEqual(
            expressions["IvrReactorLag"], f"ivr_reactor_lag_seconds > {DEFAULTS.max_loop_lag}"
        )
        for rule in _alert_rules():
            self.assertIn(rule["labels"]["severity"], ("page", "warning"))
            self.assertTrue(rule["annotations"]["summary"])


# --- what the expressions name --------------------------------------------


def _dashboard_expressions() -> Iterator[Tuple[str, str]]:
    """
    (panel title, expression) for every query of the dashboard, with its
    template variables replaced by a value.
    """
    dashboard = json.loads(DASHBOARD.read_text())
    variables = [v["name"] for v in dashboard["templating"]["list"]]
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for name in sorted(variables, key=len, reverse=True):
                expr = expr.replace("${" + name + "}", "x").replace("$" + name, "x")
            yield panel["title"], expr


def _names_in(expr: str) -> Set[str]:
    """
    The metric names that a PromQL expression selects.
    """
    names: Set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name is None:
                raise AssertionError(f"a selector without a metric name in {expr!r}")
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def _exported_names(text: str) -> Set[str]:
    """
    Every series name that a ``/metrics`` text can carry: the samples it
    has, and those its families' types imply (a counter with no labelled
    sample yet still has a name).
    """
    names: Set[str] = set()
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
        "gauge": ("",),
        "info": ("_info",),
        "stateset": ("",),
        "unknown": ("",),
    }
    for family in text_string_to_metric_families(text):
        names.update(sample.name for sample in family.samples)
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    return names


def _what_to_watch() -> Set[str]:
    """
    The metrics that the README's "What to watch" names.
    """
    readme = (ROOT / "README.md").read_text()
    start = readme.index("**What to watch**")
    section = readme[start:readme.index("\n\n", start)]
    return set(re.findall(r"\bivr_[a-z_]+[a-z]", section))


class CoverageTests(SynchronousTestCase):
    """
    The dashboard and the alert rules cover the README's "What to watch".
    """

    def test_dashboard_shows_what_to_watch(self) -> None:
        """Every metric that "What to watch" names is on a dashboard panel."""
        watched = _what_to_watch()
        self.assertGreaterEqual(len(watched), 6)
        shown = set().union(*(_names_in(expr) for _, expr in _dashboard_expressions()))
        shown |= {name.rsplit("_bucket", 1)[0] for name in shown}
        self.assertEqual(watched - shown, set())

    def test_alerts_watch_what_to_watch(self) -> None:
        """Every metric that "What to watch" names is in an alert rule."""
        used = set().union(*(_names_in(rule["expr"]) for rule in _alert_rules()))
        used |= {name.rsplit("_bucket", 1)[0] for name in used}
        self.assertEqual(_what_to_watch() - used, set())

    def test_dashboard_panels(self) -> None:
        """Panels have unique ids, a query each, and the dashboard's data source variable."""
        dashboard = json.loads(DASHBOARD.read_text())
        ids = [panel["id"] for panel in dashboard["panels"]]
        self.assertEqual(len(ids), len(set(ids)))
        for panel in dashboard["panels"]:
            self.assertTrue(panel["targets"], panel["title"])
            self.assertEqual(panel["datasource"]["uid"], "${datasource}")


class ExpressionNameTests(SynchronousTestCase):
    """
    The helpers that read names out of PromQL and out of ``/metrics`` text.
    """

    def test_names_in_an_expression(self) -> None:
        """Selectors are found inside functions, aggregations and both sides of operators."""
        self.assertEqual(
            _names_in(
                'histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="y"}[5m])))'
                " / on() group_left sum(b_total) > 3 and up == 0"
            ),
            {"a_bucket", "b_total", "up"},
        )

    def test_exported_names_from_types(self) -> None:
        """A counter family with no sample still exports its _total name."""
        text = "# HELP c_total c.\n# TYPE c_total counter\n# HELP g g.\n# TYPE g gauge\ng 1.0\n"
        self.assertEqual(_exported_names(text), {"c_total", "c_created", "g"})


def _readme_metrics() -> set[str]:
    """
    The metric names the README's Metrics section and "What to watch" name.
    """
    readme = (ROOT / "README.md").read_text()
    start = readme.index("### Metrics")
    section = readme[start : readme.index("\n### ", start + 1)]
    watch = readme.index("**What to watch**")
    section += readme[watch : readme.index("\n\n", watch)]
    return set(re.findall(r"`((?:ivr|process|python)_[a-z_]*[a-z])[`{]", section))


class ServedMetricsTests(ServiceTestCase):
    """
    The alert rules, the dashboard and the README name only metrics that the
    service's ``/metrics`` really serves, and that text passes ``promtool
    check metrics``.
    """

    @inlineCallbacks
    def _served(self) -> Any:
        response = yield treq.get(self.service.admin_url + "/metrics", timeout=5, persistent=False)
        self.assertEqual(response.code, 200)
        return (yield response.content()).decode()

    @inlineCallbacks
    def test_rules_and_dashboard_name_served_metrics(self) -> Any:
        """Every metric in alerts.yml and in the Grafana dashboard is in the served /metrics text."""
        yield self.call("CRM-PREMIUM", ["menu", "press:1"])
        exported = _exported_names((yield self._served())) | PROMETHEUS_OWN
        expressions = [(rule["alert"], rule["expr"]) for rule in _alert_rules()]
        expressions += list(_dashboard_expressions())
        self.assertGreaterEqual(len(expressions), 20)
        unknown = []
        for where, expr in expressions:
            names = _names_in(expr)
            self.assertTrue(names, where)
            unknown += [(where, name) for name in sorted(names - exported)]
        self.assertEqual(unknown, [])

    @inlineCallbacks
    def test_every_readme_metric_is_served(self) -> Any:
        """Every metric named in the README's Metrics section and "What to watch" is in a real scrape."""
        yield self.call("CRM-PREMIUM", ["menu", "press:1"])
        named = _readme_metrics()
        self.assertGreaterEqual(len(named), 30)
        self.assertIn("ivr_intake_refused_total", named)
        exported = _exported_names((yield self._served()))
        # A histogram is named by its family: its series are _bucket, _sum, _count.
        exported |= {name[: -len("_bucket")] for name in exported if name.endswith("_bucket")}
        self.assertEqual(named - exported, set())

    @inlineCallbacks
    def test_promtool_check_metrics(self) -> Any:
        """promtool check metrics finds no problem in the served /metrics text."""
        promtool = _tool("promtool")
        yield self.call("CRM-PREMIUM", ["menu", "press:1"])
        text = yield self._served()
        result = _run(promtool, "check", "metrics", stdin=text)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertEqual(result.stdout + result.stderr, "")

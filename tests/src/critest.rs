//! Running cri-tools' `critest` (v1.26.1, the CRI validation suite of Kubernetes) against the
//! test's containerd, once per CRI runtime handler, and judging each Strata handler against
//! runc's run in the same environment: a Strata handler must pass every spec runc passed,
//! except the known gaps listed (with the reason) in the test.
//!
//! critest writes a Ginkgo v2 JSON report (`--ginkgo.json-report`); [`parse_report`] reads it
//! per spec.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::cmd::{self, Output};

/// How long one handler's critest run may take before it is killed.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(40 * 60);

/// Where critest is looked for, in order: `STRATA_CRITEST`, `../shared/tools/critest` beside
/// the repository (the workplace's layout), and `/work/shared/tools/critest` (the same tools
/// where a clone of the repository sits elsewhere, as CI's does).
pub fn critest_candidates() -> Vec<PathBuf> {
    if let Some(p) = std::env::var_os("STRATA_CRITEST") {
        return vec![PathBuf::from(p)];
    }
    let manifest = crate::package_dir();
    let manifest = manifest.as_path();
    // tests/ -> the repository -> its parent, which holds shared/tools.
    let beside = manifest
        .parent()
        .and_then(Path::parent)
        .map(|p| p.join("shared/tools/critest"))
        .unwrap_or_else(|| PathBuf::from("../shared/tools/critest"));
    vec![beside, PathBuf::from("/work/shared/tools/critest")]
}

/// The first of [`critest_candidates`] that exists, else the first candidate.
pub fn critest_path() -> PathBuf {
    let candidates = critest_candidates();
    candidates
        .iter()
        .find(|p| p.is_file())
        .unwrap_or(&candidates[0])
        .clone()
}

/// What became of one spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Skipped,
    /// Failed (or panicked, timed out, was aborted), with Ginkgo's failure message.
    Failed(String),
}

impl Outcome {
    pub fn is_passed(&self) -> bool {
        *self == Outcome::Passed
    }
}

/// One spec of a run: its full text (containers' texts and the leaf's, joined by spaces).
#[derive(Debug, Clone)]
pub struct SpecResult {
    pub name: String,
    pub outcome: Outcome,
}

/// The specs of a Ginkgo v2 JSON report (`--ginkgo.json-report`): every `It`, in report order.
pub fn parse_report(json: &[u8]) -> Result<Vec<SpecResult>> {
    let v: serde_json::Value = serde_json::from_slice(json).context("parsing the JSON report")?;
    let suites = v
        .as_array()
        .ok_or_else(|| anyhow!("the report is not a list of suites"))?;
    let mut out = Vec::new();
    for suite in suites {
        for spec in suite["SpecReports"].as_array().into_iter().flatten() {
            if spec["LeafNodeType"].as_str() != Some("It") {
                continue; // BeforeSuite, AfterSuite, ReportAfterSuite...
            }
            let mut parts: Vec<&str> = spec["ContainerHierarchyTexts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str())
                .collect();
            parts.push(spec["LeafNodeText"].as_str().unwrap_or_default());
            let name = parts.join(" ");
            let outcome = match spec["State"].as_str().unwrap_or_default() {
                "passed" => Outcome::Passed,
                "skipped" | "pending" => Outcome::Skipped,
                other => {
                    let msg = spec["Failure"]["Message"].as_str().unwrap_or_default();
                    let loc = spec["Failure"]["Location"]["FileName"]
                        .as_str()
                        .map(|f| {
                            format!(
                                " ({}:{})",
                                f.rsplit('/').next().unwrap_or(f),
                                spec["Failure"]["Location"]["LineNumber"]
                            )
                        })
                        .unwrap_or_default();
                    Outcome::Failed(format!("{other}{loc}: {}", one_line(msg, 400)))
                }
            };
            out.push(SpecResult { name, outcome });
        }
    }
    Ok(out)
}

/// `s` on one line, at most about `max` characters: the start and the end of a longer one,
/// with ` ... ` between (an error's end often says most: a VM's boot failure ends with the
/// last lines of its console).
pub fn one_line(s: &str, max: usize) -> String {
    let flat: Vec<char> = s
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .collect();
    if flat.len() <= max {
        return flat.into_iter().collect();
    }
    let tail = max * 3 / 8;
    let head: String = flat[..max - tail].iter().collect();
    let end: String = flat[flat.len() - tail..].iter().collect();
    format!("{head} ... {end}")
}

/// passed / failed / skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

/// Counts the outcomes of `specs`.
pub fn counts(specs: &[SpecResult]) -> Counts {
    let mut c = Counts::default();
    for s in specs {
        match s.outcome {
            Outcome::Passed => c.passed += 1,
            Outcome::Skipped => c.skipped += 1,
            Outcome::Failed(_) => c.failed += 1,
        }
    }
    c
}

/// Where critest should find things.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub critest: PathBuf,
    /// containerd's socket (runtime and image endpoint).
    pub socket: PathBuf,
    /// `--test-images-file`.
    pub images_file: PathBuf,
    /// `--ginkgo.skip`.
    pub skip: String,
    /// Where the JSON reports go (`<dir>/<handler>.json`).
    pub report_dir: PathBuf,
    /// `--ginkgo.focus`, to run some specs only (while working on them).
    pub focus: Option<String>,
}

/// One handler's run.
#[derive(Debug)]
pub struct Run {
    /// The run's label: its handler, or a handler and its images (`strata-wasm(wasm images)`).
    pub handler: String,
    pub specs: Vec<SpecResult>,
    /// critest's own output (exit code, stdout, stderr, elapsed time).
    pub output: Output,
}

impl Run {
    pub fn counts(&self) -> Counts {
        counts(&self.specs)
    }

    /// The outcome of spec `name`, if the run has it.
    pub fn outcome(&self, name: &str) -> Option<&Outcome> {
        self.specs
            .iter()
            .find(|s| s.name == name)
            .map(|s| &s.outcome)
    }
}

impl Invocation {
    /// The command line for `handler`, its report named after `label`.
    pub fn command(&self, label: &str, handler: &str) -> Command {
        let endpoint = format!("unix://{}", self.socket.display());
        let mut c = Command::new(&self.critest);
        if let Some(focus) = &self.focus {
            c.arg(format!("--ginkgo.focus={focus}"));
        }
        c.arg(format!("--runtime-endpoint={endpoint}"))
            .arg(format!("--image-endpoint={endpoint}"))
            .arg(format!("--runtime-handler={handler}"))
            .arg(format!("--test-images-file={}", self.images_file.display()))
            .arg(format!("--ginkgo.skip={}", self.skip))
            .arg(format!(
                "--ginkgo.json-report={}",
                self.report_path(label).display()
            ))
            .arg("--ginkgo.no-color")
            .arg("--ginkgo.timeout=40m");
        c
    }

    /// The JSON report of the run labelled `label` (a handler, or a handler and its images).
    pub fn report_path(&self, label: &str) -> PathBuf {
        let file: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.report_dir.join(format!("{file}.json"))
    }

    /// Runs critest on `handler` and reads its report.
    pub fn run(&self, handler: &str) -> Result<Run> {
        self.run_labelled(handler, handler)
    }

    /// Runs critest on `handler` as the run `label` (its report file and [`Run::handler`]):
    /// one handler may be run twice, with other images.
    pub fn run_labelled(&self, label: &str, handler: &str) -> Result<Run> {
        fs::create_dir_all(&self.report_dir)
            .with_context(|| format!("creating {}", self.report_dir.display()))?;
        let report = self.report_path(label);
        let _ = fs::remove_file(&report);
        let output = cmd::run(self.command(label, handler), None, RUN_TIMEOUT)?;
        let json = fs::read(&report).with_context(|| {
            format!(
                "critest run {label} wrote no report {} ({}): {}",
                report.display(),
                if output.timed_out() {
                    "timed out".to_string()
                } else {
                    format!("exit {}", output.code)
                },
                tail(&format!("{}\n{}", output.stdout, output.stderr), 40)
            )
        })?;
        let specs = parse_report(&json)?;
        if specs.is_empty() {
            bail!(
                "critest run {label} reported no spec: {}",
                tail(&output.stdout, 40)
            );
        }
        Ok(Run {
            handler: label.to_string(),
            specs,
            output,
        })
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A spec that a Strata handler is known to fail where runc passes, and why.
#[derive(Debug, Clone, Copy)]
pub struct KnownGap {
    /// A part of the spec's full text (unique among the specs).
    pub spec: &'static str,
    /// The run's label ([`Run::handler`]).
    pub handler: &'static str,
    pub reason: &'static str,
}

/// A spec that cannot apply to a kind of container (a WebAssembly module's), and why: it is
/// not run (its text is part of `--ginkgo.skip`) and not judged.
#[derive(Debug, Clone, Copy)]
pub struct NotApplicable {
    /// A part of the spec's full text, plain (escaped for the regular expression).
    pub spec: &'static str,
    pub reason: &'static str,
}

/// `s` as a Go (RE2) regular expression that matches exactly `s`.
pub fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The `--ginkgo.skip` alternatives for `table`.
pub fn not_applicable_regex(table: &[NotApplicable]) -> String {
    table
        .iter()
        .map(|n| regex_escape(n.spec))
        .collect::<Vec<_>>()
        .join("|")
}

/// The entry of `table` that `spec` falls under.
pub fn not_applicable<'t>(table: &'t [NotApplicable], spec: &str) -> Option<&'t NotApplicable> {
    table.iter().find(|n| spec.contains(n.spec))
}

/// How `run` differs from the `baseline` (runc) run.
#[derive(Debug, Default)]
pub struct Judgement {
    /// Specs runc passed and `run` did not, not listed as known gaps: `(spec, outcome)`.
    pub regressions: Vec<(String, Outcome)>,
    /// Specs runc passed and `run` did not, listed as known gaps: `(spec, outcome, reason)`.
    pub known: Vec<(String, Outcome, &'static str)>,
    /// Known gaps of this handler that passed after all (the table should lose them).
    pub fixed_gaps: Vec<&'static str>,
    /// Specs runc did not pass but `run` did.
    pub better: Vec<String>,
}

/// Judges `run` against `baseline` with the known `gaps`.
pub fn judge(baseline: &Run, run: &Run, gaps: &[KnownGap]) -> Judgement {
    judge_applicable(baseline, run, gaps, &[])
}

/// As [`judge`], leaving out the specs that `not_applicable` lists for `run` (not run there).
pub fn judge_applicable(
    baseline: &Run,
    run: &Run,
    gaps: &[KnownGap],
    not_applicable: &[NotApplicable],
) -> Judgement {
    let mut j = Judgement::default();
    let gaps: Vec<&KnownGap> = gaps.iter().filter(|g| g.handler == run.handler).collect();
    for base in &baseline.specs {
        if self::not_applicable(not_applicable, &base.name).is_some() {
            continue;
        }
        let outcome = run
            .outcome(&base.name)
            .cloned()
            .unwrap_or(Outcome::Failed("not in this handler's report".into()));
        if base.outcome.is_passed() && !outcome.is_passed() {
            match gaps.iter().find(|g| base.name.contains(g.spec)) {
                Some(g) => j.known.push((base.name.clone(), outcome, g.reason)),
                None => j.regressions.push((base.name.clone(), outcome)),
            }
        } else if !base.outcome.is_passed() && outcome.is_passed() {
            j.better.push(base.name.clone());
        }
    }
    for g in gaps {
        let passed = run
            .specs
            .iter()
            .any(|s| s.name.contains(g.spec) && s.outcome.is_passed());
        if passed {
            j.fixed_gaps.push(g.spec);
        }
    }
    j
}

/// A table row: handler, counts (None: not run) and how long it took or why not run.
pub struct Row {
    pub handler: String,
    pub counts: Option<Counts>,
    pub note: String,
}

/// The per-handler table.
pub fn table(rows: &[Row]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<24} {:>6} {:>6} {:>7}  note",
        "handler", "passed", "failed", "skipped"
    );
    for r in rows {
        match r.counts {
            Some(c) => {
                let _ = writeln!(
                    s,
                    "{:<24} {:>6} {:>6} {:>7}  {}",
                    r.handler, c.passed, c.failed, c.skipped, r.note
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "{:<24} {:>6} {:>6} {:>7}  {}",
                    r.handler, "-", "-", "-", r.note
                );
            }
        }
    }
    s
}

/// The summary line for `scripts/test-all`:
/// `critest\t<handler>\t<containerd>\t<passed>\t<failed>\t<skipped>`.
pub fn summary_line(handler: &str, containerd: &str, c: Counts) -> String {
    format!(
        "critest\t{handler}\t{containerd}\t{}\t{}\t{}\n",
        c.passed, c.failed, c.skipped
    )
}

/// Appends `lines` to the file named by `STRATA_TEST_SUMMARY`, if set.
pub fn write_summary(lines: &str) -> Result<()> {
    let Some(path) = std::env::var_os("STRATA_TEST_SUMMARY") else {
        return Ok(());
    };
    use std::io::Write;
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", Path::new(&path).display()))?;
    f.write_all(lines.as_bytes())?;
    Ok(())
}

/// The `--test-images-file` YAML: critest's default test image and web server image.
pub fn images_yaml(default_image: &str, web_server_image: &str) -> String {
    format!("defaultTestContainerImage: {default_image}\nwebServerTestImage: {web_server_image}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, outcome: Outcome) -> SpecResult {
        SpecResult {
            name: name.into(),
            outcome,
        }
    }

    fn run(handler: &str, specs: Vec<SpecResult>) -> Run {
        Run {
            handler: handler.into(),
            specs,
            output: Output {
                command: String::new(),
                code: 0,
                stdout: String::new(),
                stderr: String::new(),
                elapsed: Duration::ZERO,
            },
        }
    }

    #[test]
    fn parses_ginkgo_v2_json() {
        let json = br#"[{"SpecReports":[
            {"LeafNodeType":"BeforeSuite","LeafNodeText":"","State":"passed"},
            {"ContainerHierarchyTexts":["[k8s.io] A","b"],"LeafNodeType":"It","LeafNodeText":"c","State":"passed"},
            {"ContainerHierarchyTexts":["[k8s.io] A"],"LeafNodeType":"It","LeafNodeText":"d","State":"skipped"},
            {"ContainerHierarchyTexts":["[k8s.io] A"],"LeafNodeType":"It","LeafNodeText":"e","State":"failed",
             "Failure":{"Message":"boom\n  here","Location":{"FileName":"/x/pkg/validate/pod.go","LineNumber":12}}}
        ]}]"#;
        let specs = parse_report(json).unwrap();
        assert_eq!(specs.len(), 3);
        assert_eq!(specs[0].name, "[k8s.io] A b c");
        assert_eq!(specs[0].outcome, Outcome::Passed);
        assert_eq!(specs[1].outcome, Outcome::Skipped);
        assert_eq!(
            specs[2].outcome,
            Outcome::Failed("failed (pod.go:12): boom here".into())
        );
        assert_eq!(
            counts(&specs),
            Counts {
                passed: 1,
                failed: 1,
                skipped: 1
            }
        );
    }

    #[test]
    fn judges_against_the_baseline() {
        let base = run(
            "runc",
            vec![
                spec("a", Outcome::Passed),
                spec("b", Outcome::Passed),
                spec("c", Outcome::Failed("x".into())),
                spec("d", Outcome::Passed),
            ],
        );
        let other = run(
            "strata-native",
            vec![
                spec("a", Outcome::Passed),
                spec("b", Outcome::Failed("y".into())),
                spec("c", Outcome::Passed),
                spec("d", Outcome::Failed("z".into())),
            ],
        );
        let gaps = [
            KnownGap {
                spec: "d",
                handler: "strata-native",
                reason: "why",
            },
            KnownGap {
                spec: "b",
                handler: "strata-sentry",
                reason: "other handler",
            },
        ];
        let j = judge(&base, &other, &gaps);
        assert_eq!(j.regressions.len(), 1);
        assert_eq!(j.regressions[0].0, "b");
        assert_eq!(j.known.len(), 1);
        assert_eq!(j.known[0].2, "why");
        assert_eq!(j.better, vec!["c".to_string()]);
        assert!(j.fixed_gaps.is_empty());
    }

    #[test]
    fn not_applicable_specs_are_skipped_and_not_judged() {
        let table = [NotApplicable {
            spec: "execSync [Conformance]",
            reason: "no exec",
        }];
        assert_eq!(not_applicable_regex(&table), "execSync \\[Conformance\\]");
        assert_eq!(regex_escape("a.b(c)|d"), "a\\.b\\(c\\)\\|d");
        let base = run(
            "runc",
            vec![
                spec("x should support execSync [Conformance]", Outcome::Passed),
                spec("x starting container", Outcome::Passed),
            ],
        );
        let wasm = run(
            "strata-wasm(wasm images)",
            vec![
                spec("x should support execSync [Conformance]", Outcome::Skipped),
                spec("x starting container", Outcome::Failed("f".into())),
            ],
        );
        let j = judge_applicable(&base, &wasm, &[], &table);
        assert_eq!(j.regressions.len(), 1);
        assert_eq!(j.regressions[0].0, "x starting container");
        assert!(not_applicable(&table, "x should support execSync [Conformance]").is_some());
        assert!(not_applicable(&table, "x starting container").is_none());
    }

    #[test]
    fn report_files_are_named_after_the_label() {
        let inv = Invocation {
            critest: PathBuf::from("critest"),
            socket: PathBuf::from("/s"),
            images_file: PathBuf::from("/i"),
            skip: String::new(),
            report_dir: PathBuf::from("/r"),
            focus: None,
        };
        assert_eq!(
            inv.report_path("strata-wasm(wasm images)"),
            Path::new("/r/strata-wasm_wasm_images_.json")
        );
        assert_eq!(inv.report_path("runc"), Path::new("/r/runc.json"));
    }

    #[test]
    fn long_messages_keep_their_start_and_end() {
        assert_eq!(one_line("a  b\n c", 10), "a b c");
        let long = format!("start {} console ends: last line", "x ".repeat(200));
        let s = one_line(&long, 80);
        assert!(
            s.starts_with("start x") && s.ends_with("console ends: last line"),
            "{s}"
        );
        assert!(s.chars().count() <= 85, "{s}");
    }

    #[test]
    fn summary_line_format() {
        let c = Counts {
            passed: 55,
            failed: 1,
            skipped: 17,
        };
        assert_eq!(
            summary_line("runc", "1.6", c),
            "critest\trunc\t1.6\t55\t1\t17\n"
        );
    }
}

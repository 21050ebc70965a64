//! `strata install` and `strata uninstall`: Strata onto a containerd node and off it again.
//!
//! Install puts the three binaries in `/usr/local/bin`, the guest image in
//! `/usr/share/strata/guest`, one handler configuration per tier in `/etc/strata`, and merges
//! the tiers' CRI handlers into containerd's configuration. The handler tables are the shipped
//! ones (`configs/containerd-strata.toml` for config version 2, `-v3.toml` for version 3), so
//! what is installed is what the documentation shows.
//!
//! The configuration is edited as a document (`toml_edit`): comments, order and everything
//! else in the file stay as they are. Nothing is written until the merged file has been
//! accepted by the node's own containerd (`containerd --config <merged> config dump`), and a
//! file that cannot be merged safely (a handler of the same name defined differently, an
//! imported file that defines the CRI section, an unknown config version) stops the install
//! with the reason and leaves everything untouched.
//!
//! What install changed is recorded in `/var/lib/strata/install`: the configuration as it was
//! (or that there was none), as it was written, and every file put in place with the earlier
//! file it replaced. Uninstall gives back the configuration byte for byte when nobody edited it
//! since; otherwise it removes Strata's handlers only and keeps the edits.
//!
//! Every path is taken under `root` (`/` on a node; a directory in tests, or the host's root
//! mounted into the installer's container).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use strata_backend::BackendKind;
use toml_edit::{DocumentMut, Item, Table};

/// containerd's configuration, where it reads it by default.
pub const CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";
/// Where the binaries go (on containerd's PATH on every distribution).
pub const BIN_DIR: &str = "/usr/local/bin";
/// Where the microvm tier looks for its guest kernel and initramfs by default.
pub const GUEST_DIR: &str = "/usr/share/strata/guest";
/// Where the handlers' Strata configurations go (the `ConfigPath` of each handler).
pub const CONFIG_DIR: &str = "/etc/strata";
/// What install records for uninstall.
pub const STATE_DIR: &str = "/var/lib/strata/install";

/// Node Feature Discovery's local feature files: NFD labels the node
/// `feature.node.kubernetes.io/<name>=<value>` for each line of a file here, which is how the
/// RuntimeClasses' `nodeSelector` finds the nodes where a tier works.
pub const NFD_FEATURES: &str = "/etc/kubernetes/node-feature-discovery/features.d/strata";

/// The binaries install copies, from `--from`.
pub const BINARIES: [&str; 3] = ["containerd-shim-strata-v2", "strata", "strata-wasm-runner"];
/// The guest image's files, from `--guest`.
pub const GUEST_FILES: [&str; 2] = ["vmlinux", "initramfs.cpio.gz"];

const SHIPPED_V2: &str = include_str!("../../configs/containerd-strata.toml");
const SHIPPED_V3: &str = include_str!("../../configs/containerd-strata-v3.toml");

/// The Strata configuration each tier's handler names, as shipped.
fn tier_config(tier: BackendKind) -> &'static str {
    match tier {
        BackendKind::Native => include_str!("../../configs/strata-native.toml"),
        BackendKind::Sentry => include_str!("../../configs/strata-sentry.toml"),
        BackendKind::Microvm => include_str!("../../configs/strata-microvm.toml"),
        BackendKind::Wasm => include_str!("../../configs/strata-wasm.toml"),
    }
}

/// The CRI plugin table that holds the runtime handlers, per config version.
fn cri_plugin(version: i64) -> &'static str {
    if version >= 3 {
        "io.containerd.cri.v1.runtime"
    } else {
        "io.containerd.grpc.v1.cri"
    }
}

/// How containerd is restarted once its configuration changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// `systemctl restart containerd` when systemd runs containerd, else a note to do it.
    Auto,
    /// Always through systemd (fails when systemd does not run containerd).
    Systemd,
    /// SIGTERM to this pid, for a supervisor that starts containerd again.
    Pid(i32),
    /// Leave it to the operator.
    Never,
}

/// What `strata install` and `strata uninstall` are given.
#[derive(Debug, Clone)]
pub struct Options {
    /// The node's root (`/`).
    pub root: PathBuf,
    /// containerd's configuration, as a path on the node.
    pub config: PathBuf,
    /// Directory holding the binaries (default: the one `strata` runs from).
    pub from: PathBuf,
    /// Directory holding `vmlinux` and `initramfs.cpio.gz` (optional: without it the microvm
    /// tier reports itself unavailable until a guest image is put in place).
    pub guest: Option<PathBuf>,
    /// The node's containerd binary: its version decides the config format, and it validates
    /// the merged file.
    pub containerd: PathBuf,
    /// The tiers whose handlers are merged.
    pub tiers: Vec<BackendKind>,
    /// Print what would change (the configuration's diff) and change nothing.
    pub dry_run: bool,
    /// Merge the handlers into containerd's configuration only; the files are put in place by
    /// other means (a package).
    pub config_only: bool,
    /// Run containerd (the check of the merged file) and systemctl in the mount namespace of
    /// the node's pid 1: the installer's container runs with `hostPID` and the node's root
    /// mounted at `root`, and has neither program in its own image.
    pub host_namespaces: bool,
    /// Write the Node Feature Discovery file ([`NFD_FEATURES`]) naming the tiers that
    /// `strata check` finds working here.
    pub node_features: bool,
    pub restart: Restart,
}

impl Options {
    /// Defaults for a node: root `/`, containerd's default config, every tier.
    pub fn for_node() -> Options {
        let from = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("."));
        Options {
            root: PathBuf::from("/"),
            config: PathBuf::from(CONTAINERD_CONFIG),
            guest: None,
            from,
            containerd: PathBuf::from("containerd"),
            tiers: BackendKind::ALL.to_vec(),
            dry_run: false,
            config_only: false,
            host_namespaces: false,
            node_features: true,
            restart: Restart::Auto,
        }
    }

    /// `path` (absolute, as on the node) under the root.
    fn host(&self, path: impl AsRef<Path>) -> PathBuf {
        let p = path.as_ref();
        self.root.join(p.strip_prefix("/").unwrap_or(p))
    }

    fn state_dir(&self) -> PathBuf {
        self.host(STATE_DIR)
    }
}

/// What install recorded (`state.json` in [`STATE_DIR`]).
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// containerd's configuration (path on the node).
    config: PathBuf,
    /// Whether it existed before the first install (its bytes are in `config.orig`).
    config_existed: bool,
    /// The handler names install merged.
    handlers: Vec<String>,
    /// The config version the handlers were written for.
    version: i64,
    /// Files install put in place (paths on the node), each with the backup (a file name in
    /// the state directory) of the file it replaced, if there was one.
    files: Vec<PlacedFile>,
    /// Directories install created (paths on the node), removed again when empty.
    #[serde(default)]
    dirs: Vec<PathBuf>,
}

#[derive(Debug, Serialize, Deserialize)]
struct PlacedFile {
    path: PathBuf,
    backup: Option<String>,
}

/// What one run did or would do, one line each, for the operator.
#[derive(Debug, Default)]
pub struct Report {
    pub lines: Vec<String>,
    /// The configuration's unified diff (dry run), empty when it does not change.
    pub diff: String,
}

impl Report {
    fn say(&mut self, line: impl Into<String>) {
        self.lines.push(line.into());
    }
}

/// containerd's version from `containerd --version` (`containerd github.com/containerd/containerd
/// 1.6.20~ds1 ...`, `containerd github.com/containerd/containerd/v2 v2.1.9 ...`): (major, minor).
pub fn containerd_version(opts: &Options) -> Result<(u32, u32)> {
    let containerd = opts.containerd.as_path();
    let out = node_command(opts, containerd)
        .arg("--version")
        .output()
        .with_context(|| format!("running `{} --version`", containerd.display()))?;
    if !out.status.success() {
        bail!(
            "`{} --version` failed: {}",
            containerd.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    parse_containerd_version(&text)
        .ok_or_else(|| anyhow!("cannot read containerd's version from {:?}", text.trim()))
}

fn parse_containerd_version(text: &str) -> Option<(u32, u32)> {
    let word = text.split_whitespace().nth(2)?;
    let mut parts = word.trim_start_matches('v').split(['.', '~', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The config version to write: the file's own, checked against what this containerd reads;
/// for a file that sets nothing yet, this containerd's native one.
fn config_version(doc: &DocumentMut, containerd: (u32, u32), path: &Path) -> Result<i64> {
    let native = if containerd.0 >= 2 { 3 } else { 2 };
    let Some(v) = doc.get("version") else {
        if doc.as_table().is_empty() {
            return Ok(native);
        }
        bail!(
            "{} has no `version`, so containerd reads it as config version 1, whose CRI section \
             Strata does not write; migrate it to version {native} first (containerd 2's \
             `containerd config migrate`, or `containerd config default` as a start) and run \
             install again",
            path.display()
        );
    };
    let v = v
        .as_integer()
        .ok_or_else(|| anyhow!("{}: `version` is not an integer", path.display()))?;
    match v {
        2 => Ok(2),
        3 if containerd.0 >= 2 => Ok(3),
        3 => bail!(
            "{} is config version 3 (containerd 2's format), but this containerd is {}.{}, \
             which reads version 2",
            path.display(),
            containerd.0,
            containerd.1
        ),
        v => bail!(
            "{}: config version {v} is not one Strata writes (2 for containerd 1.6 and 1.7, 3 \
             for 2.x)",
            path.display()
        ),
    }
}

/// The handler `name` in `doc`'s CRI section for config `version`, if there is one.
fn handler_in<'a>(doc: &'a DocumentMut, version: i64, name: &str) -> Option<&'a Item> {
    doc.get("plugins")
        .and_then(|p| p.get(cri_plugin(version)))
        .and_then(|p| p.get("containerd"))
        .and_then(|p| p.get("runtimes"))
        .and_then(|p| p.get(name))
}

/// The shipped handler table for `tier` in config `version`, with no document positions (so
/// that it lands beside the file's own handlers).
fn shipped_handler(version: i64, tier: BackendKind) -> Result<Table> {
    let text = if version >= 3 { SHIPPED_V3 } else { SHIPPED_V2 };
    let doc: DocumentMut = text.parse().context("the shipped handler tables")?;
    let name = format!("strata-{tier}");
    let t = handler_in(&doc, version, &name)
        .and_then(Item::as_table)
        .ok_or_else(|| anyhow!("the shipped configuration has no handler {name}"))?;
    Ok(fresh(t))
}

/// A copy of `t` without document positions; keys keep their comments.
fn fresh(t: &Table) -> Table {
    let mut n = Table::new();
    *n.decor_mut() = t.decor().clone();
    for (k, _) in t.iter() {
        let Some((key, item)) = t.get_key_value(k) else {
            continue;
        };
        let item = match item {
            Item::Table(sub) => Item::Table(fresh(sub)),
            other => other.clone(),
        };
        n.insert_formatted(key, item);
    }
    n
}

/// `item` as plain TOML data (comments and layout dropped), to compare handlers.
fn plain(item: &Item) -> Option<toml::Table> {
    let table = item.clone().into_table().ok()?;
    let mut doc = DocumentMut::new();
    doc.insert("t", Item::Table(table));
    let parsed: toml::Table = toml::from_str(&doc.to_string()).ok()?;
    parsed.get("t")?.as_table().cloned()
}

/// The table at `path` below `table`, created (without a header of its own) where missing.
fn table_at<'a>(table: &'a mut Table, path: &[&str], file: &Path) -> Result<&'a mut Table> {
    let mut t = table;
    let mut walked = Vec::new();
    for key in path {
        walked.push(format!("{key:?}"));
        if !t.contains_key(key) {
            let mut n = Table::new();
            n.set_implicit(true);
            t.insert(key, Item::Table(n));
        }
        t = t.get_mut(key).and_then(Item::as_table_mut).ok_or_else(|| {
            anyhow!(
                "{}: `{}` is not a table (an inline table or a value), so Strata cannot add to \
                 it without rewriting it",
                file.display(),
                walked.join(".")
            )
        })?;
    }
    Ok(t)
}

/// Merges the handlers of `tiers` into `doc` (config `version`). Returns the handlers added;
/// the ones already there as Strata writes them are left alone, any other of the same name is
/// a conflict.
fn merge(
    doc: &mut DocumentMut,
    version: i64,
    tiers: &[BackendKind],
    file: &Path,
) -> Result<Vec<String>> {
    if doc.get("version").is_none() {
        doc.insert("version", toml_edit::value(version));
    }
    let mut planned = Vec::new();
    for &tier in tiers {
        let ours = shipped_handler(version, tier)?;
        let name = format!("strata-{tier}");
        match handler_in(doc, version, &name) {
            None => planned.push((name, ours)),
            Some(item) => {
                if plain(item) != plain(&Item::Table(ours)) {
                    bail!(
                        "{}: a handler named {name} is already defined, differently from \
                         Strata's (plugins.{:?}.containerd.runtimes.{name}); rename or remove \
                         it, then run install again",
                        file.display(),
                        cri_plugin(version)
                    );
                }
            }
        }
    }
    let mut added = Vec::new();
    if planned.is_empty() {
        return Ok(added);
    }
    let runtimes = table_at(
        doc.as_table_mut(),
        &["plugins", cri_plugin(version), "containerd", "runtimes"],
        file,
    )?;
    for (name, table) in planned {
        runtimes.insert(&name, Item::Table(table));
        added.push(name);
    }
    Ok(added)
}

/// Refuses an `imports` whose files define the CRI section the handlers go into: containerd
/// 1.x replaces a plugin's whole section with an imported one, so the handlers would vanish.
fn check_imports(opts: &Options, doc: &DocumentMut, version: i64, file: &Path) -> Result<()> {
    let Some(imports) = doc.get("imports") else {
        return Ok(());
    };
    let imports = imports
        .as_array()
        .ok_or_else(|| anyhow!("{}: `imports` is not an array", file.display()))?;
    let base = file.parent().unwrap_or(Path::new("/"));
    for pattern in imports.iter().filter_map(|v| v.as_str()) {
        let pattern = if Path::new(pattern).is_absolute() {
            opts.host(pattern)
        } else {
            base.join(pattern)
        };
        for path in glob(&pattern) {
            let Ok(text) = fs::read_to_string(&path) else {
                continue;
            };
            let imported: DocumentMut = text
                .parse()
                .with_context(|| format!("{} (imported by {})", path.display(), file.display()))?;
            let plugin = cri_plugin(version);
            if imported
                .get("plugins")
                .and_then(|p| p.get(plugin))
                .is_some()
            {
                bail!(
                    "{} imports {}, which defines [plugins.{plugin:?}]: containerd takes \
                     that section from the imported file, so handlers merged into {} would \
                     not be seen; merge Strata's handlers (configs/containerd-strata*.toml) \
                     into {} by hand, or drop it from `imports`",
                    file.display(),
                    path.display(),
                    file.display(),
                    path.display()
                );
            }
        }
    }
    Ok(())
}

/// The files matching `pattern`, whose last component may hold `*` (as containerd's imports).
fn glob(pattern: &Path) -> Vec<PathBuf> {
    let name = pattern
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains('*') {
        return vec![pattern.to_path_buf()];
    }
    let dir = pattern.parent().unwrap_or(Path::new("/"));
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| wildcard(&name, &e.file_name().to_string_lossy()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

fn wildcard(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            let Some(tail) = name.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len())
                .filter(|&i| tail.is_char_boundary(i))
                .any(|i| wildcard(rest, &tail[i..]))
        }
    }
}

/// Has containerd parse `text` as its configuration (written beside `file`, so that relative
/// imports resolve as they will) and checks that the handlers are in what it read.
fn validate(opts: &Options, file: &Path, text: &str, handlers: &[String]) -> Result<()> {
    let dir = file.parent().unwrap_or(Path::new("/"));
    let tmp = dir.join(format!(".strata-install-{}.toml", std::process::id()));
    fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    let out = node_command(opts, &opts.containerd)
        .arg("--config")
        .arg(as_node_sees(opts, &tmp))
        .args(["config", "dump"])
        .output();
    let _ = fs::remove_file(&tmp);
    let out =
        out.with_context(|| format!("running `{} config dump`", opts.containerd.display()))?;
    if !out.status.success() {
        bail!(
            "containerd does not accept the merged configuration: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let dumped: toml::Table = toml::from_str(&String::from_utf8_lossy(&out.stdout))
        .context("reading `containerd config dump`")?;
    for name in handlers {
        let found = ["io.containerd.cri.v1.runtime", "io.containerd.grpc.v1.cri"]
            .iter()
            .filter_map(|p| {
                dumped
                    .get("plugins")?
                    .get(*p)?
                    .get("containerd")?
                    .get("runtimes")?
                    .get(name)?
                    .get("runtime_type")?
                    .as_str()
            })
            .any(|t| t == crate::RUNTIME_TYPE);
        if !found {
            bail!("containerd read the merged configuration but has no handler {name} in it");
        }
    }
    Ok(())
}

/// A unified diff of `before` and `after` (through `diff -u`).
fn diff(label: &Path, before: &str, after: &str) -> Result<String> {
    if before == after {
        return Ok(String::new());
    }
    let dir = std::env::temp_dir().join(format!("strata-diff-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let (a, b) = (dir.join("a"), dir.join("b"));
    fs::write(&a, before)?;
    fs::write(&b, after)?;
    let out = Command::new("diff")
        .arg("-u")
        .arg(format!("--label={}", label.display()))
        .arg(format!("--label={} (with Strata)", label.display()))
        .arg(&a)
        .arg(&b)
        .output();
    let _ = fs::remove_dir_all(&dir);
    let out = out.context("running diff")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Writes `bytes` at `path` through a temporary file and a rename (a running shim's binary
/// cannot be written in place), with `mode`.
fn put(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    strata_backend::files::write_atomically(path, bytes, mode)
        .with_context(|| format!("writing {}", path.display()))
}

/// The directories above `path` (a path on the node) that do not exist under the root yet,
/// outermost first.
fn missing_dirs(opts: &Options, path: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = path
        .ancestors()
        .skip(1)
        .filter(|d| *d != Path::new("/") && !opts.host(d).exists())
        .map(Path::to_path_buf)
        .collect();
    out.reverse();
    out
}

/// Reads the recorded state, if install ran before.
fn load_state(opts: &Options) -> Result<Option<State>> {
    let path = opts.state_dir().join("state.json");
    match fs::read(&path) {
        Ok(b) => Ok(Some(
            serde_json::from_slice(&b).with_context(|| format!("reading {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn save_state(opts: &Options, state: &State) -> Result<()> {
    let json = serde_json::to_vec_pretty(state)?;
    put(&opts.state_dir().join("state.json"), &json, 0o600)
}

/// What a placed file holds: bytes (shipped or made here), or a file copied as it is.
enum Source {
    Bytes(std::borrow::Cow<'static, [u8]>),
    File(PathBuf),
}

/// Whether the file at `at` holds what `src` holds (compared in pieces: the binaries of a
/// debug build are hundreds of MiB). None when there is no file at `at`.
fn same_content(at: &Path, src: &Source) -> Result<Option<bool>> {
    use std::io::Read;
    let mut a = match fs::File::open(at) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", at.display())),
    };
    let mut b: Box<dyn Read + '_> = match src {
        Source::Bytes(bytes) => Box::new(&bytes[..]),
        Source::File(p) => {
            Box::new(fs::File::open(p).with_context(|| format!("reading {}", p.display()))?)
        }
    };
    let (mut x, mut y) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = read_full(&mut a, &mut x)?;
        let m = read_full(&mut b, &mut y)?;
        if n != m || x[..n] != y[..m] {
            return Ok(Some(false));
        }
        if n == 0 {
            return Ok(Some(true));
        }
    }
}

fn read_full(r: &mut dyn std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Puts `src` at `path` as [`put`] does.
fn place(path: &Path, src: &Source, mode: u32) -> Result<()> {
    match src {
        Source::Bytes(b) => put(path, b, mode),
        Source::File(from) => {
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            let tmp = strata_backend::files::temporary_for(path);
            fs::copy(from, &tmp)
                .with_context(|| format!("copying {} to {}", from.display(), tmp.display()))?;
            fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
            fs::rename(&tmp, path).with_context(|| format!("renaming {} into place", tmp.display()))
        }
    }
}

/// One file install puts in place: where, what, its mode.
struct Placement {
    path: PathBuf,
    src: Source,
    mode: u32,
    /// Keep a file already there that differs (an operator's edited handler configuration).
    keep_existing: bool,
}

fn placements(opts: &Options, report: &mut Report) -> Result<Vec<Placement>> {
    let mut out = Vec::new();
    if opts.config_only {
        return Ok(out);
    }
    for b in BINARIES {
        let src = opts.from.join(b);
        if !src.is_file() {
            bail!(
                "{} is missing (--from names the directory holding {})",
                src.display(),
                BINARIES.join(", ")
            );
        }
        out.push(Placement {
            path: Path::new(BIN_DIR).join(b),
            src: Source::File(src),
            mode: 0o755,
            keep_existing: false,
        });
    }
    for &tier in &opts.tiers {
        out.push(Placement {
            path: Path::new(CONFIG_DIR).join(format!("strata-{tier}.toml")),
            src: Source::Bytes(tier_config(tier).as_bytes().into()),
            mode: 0o644,
            keep_existing: true,
        });
    }
    match &opts.guest {
        Some(dir) => {
            for f in GUEST_FILES {
                let src = dir.join(f);
                if !src.is_file() {
                    bail!("the guest image's {} is missing (--guest)", src.display());
                }
                out.push(Placement {
                    path: Path::new(GUEST_DIR).join(f),
                    src: Source::File(src),
                    mode: 0o644,
                    keep_existing: false,
                });
            }
        }
        None if opts.tiers.contains(&BackendKind::Microvm) => report.say(format!(
            "microvm: no guest image given (--guest DIR with {}); the tier reports itself \
             unavailable until they are in {GUEST_DIR}",
            GUEST_FILES.join(" and ")
        )),
        None => {}
    }
    if opts.node_features {
        out.push(Placement {
            path: PathBuf::from(NFD_FEATURES),
            src: Source::Bytes(node_features(&opts.tiers).into_bytes().into()),
            mode: 0o644,
            keep_existing: false,
        });
    }
    Ok(out)
}

/// The Node Feature Discovery file: `strata-<tier>=true` for each installed tier that
/// `strata check` finds available or degraded on this node.
fn node_features(tiers: &[BackendKind]) -> String {
    let report = crate::check::run();
    let mut out = String::from(
        "# Written by `strata install`: the tiers `strata check` finds working on this node.\n\
         # Node Feature Discovery labels the node feature.node.kubernetes.io/<name>=<value>.\n",
    );
    for &tier in tiers {
        let works = report
            .tier(tier)
            .is_some_and(|t| t.verdict != crate::check::Verdict::Unavailable);
        if works {
            out.push_str(&format!("strata-{tier}=true\n"));
        }
    }
    out
}

/// A command for `prog` as the node runs it: in the mount namespace of the node's pid 1 when
/// [`Options::host_namespaces`] is set (paths given to it are then the node's, not the
/// root's), else here.
fn node_command(opts: &Options, prog: &Path) -> Command {
    let mut c = Command::new(prog);
    if opts.host_namespaces {
        use std::os::unix::process::CommandExt;
        let ns = fs::File::open("/proc/1/ns/mnt").ok();
        // SAFETY: between fork and exec only setns(2) on a descriptor opened before the fork,
        // and errors built from a raw errno: no allocation, no lock.
        unsafe {
            c.pre_exec(move || {
                let Some(ns) = ns.as_ref() else {
                    return Err(std::io::Error::from_raw_os_error(libc::ENOENT));
                };
                if libc::setns(std::os::fd::AsRawFd::as_raw_fd(ns), libc::CLONE_NEWNS) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    c
}

/// `path` under the root as the program [`node_command`] runs sees it.
fn as_node_sees(opts: &Options, path: &Path) -> PathBuf {
    if !opts.host_namespaces {
        return path.to_path_buf();
    }
    match path.strip_prefix(&opts.root) {
        Ok(rel) => Path::new("/").join(rel),
        Err(_) => path.to_path_buf(),
    }
}

/// Refuses a restart that cannot happen, before anything changes: a `--containerd-pid` that
/// names no process, `--restart systemd` where systemd does not run containerd.
fn check_restart(opts: &Options) -> Result<()> {
    if opts.dry_run {
        return Ok(());
    }
    match opts.restart {
        Restart::Pid(pid) => {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).with_context(|| {
                format!("--containerd-pid {pid}: no such process to restart; nothing was changed")
            })?;
        }
        Restart::Systemd if !systemd_runs_containerd(opts) => bail!(
            "--restart systemd: systemd does not run containerd here (systemctl is-active \
             containerd); nothing was changed"
        ),
        _ => {}
    }
    Ok(())
}

/// Whether `systemctl is-active containerd` (on the node) says it runs.
fn systemd_runs_containerd(opts: &Options) -> bool {
    node_command(opts, Path::new("systemctl"))
        .args(["is-active", "--quiet", "containerd"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `strata install`.
pub fn install(opts: &Options) -> Result<Report> {
    check_restart(opts)?;
    let mut report = Report::default();
    let file = opts.host(&opts.config);
    let containerd = containerd_version(opts)?;
    let before = match fs::read(&file) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    let text = match &before {
        Some(b) => {
            std::str::from_utf8(b).map_err(|_| anyhow!("{} is not UTF-8 text", file.display()))?
        }
        None => "",
    };
    let mut doc: DocumentMut = text
        .parse()
        .with_context(|| format!("{} is not valid TOML; nothing was changed", file.display()))?;
    let version = config_version(&doc, containerd, &file)?;
    check_imports(opts, &doc, version, &file)?;
    let added = merge(&mut doc, version, &opts.tiers, &file)?;
    let merged = doc.to_string();
    let handlers: Vec<String> = opts.tiers.iter().map(|t| format!("strata-{t}")).collect();
    let placements = placements(opts, &mut report)?;

    if opts.dry_run {
        report.diff = diff(&opts.config, text, &merged)?;
        for p in &placements {
            let verb = match same_content(&opts.host(&p.path), &p.src)? {
                None => "would put",
                Some(true) => continue,
                Some(false) if p.keep_existing => "would keep the existing",
                Some(false) => "would replace",
            };
            report.say(format!("{verb} {}", p.path.display()));
        }
        if added.is_empty() {
            report.say(format!(
                "{}: the handlers are there already",
                opts.config.display()
            ));
        }
        return Ok(report);
    }

    if !added.is_empty() {
        validate(opts, &file, &merged, &handlers)?;
    }

    let state_dir = opts.state_dir();
    let mut state = match load_state(opts)? {
        Some(s) => s,
        None => {
            let dirs = missing_dirs(opts, &Path::new(STATE_DIR).join("state.json"));
            fs::create_dir_all(&state_dir)
                .with_context(|| format!("creating {}", state_dir.display()))?;
            if let Some(b) = &before {
                put(&state_dir.join("config.orig"), b, 0o600)?;
            }
            State {
                config: opts.config.clone(),
                config_existed: before.is_some(),
                version,
                dirs,
                ..State::default()
            }
        }
    };
    if state.config != opts.config {
        bail!(
            "Strata was installed into {} (see {}); uninstall it first",
            state.config.display(),
            state_dir.display()
        );
    }
    for p in &placements {
        let at = opts.host(&p.path);
        let now = same_content(&at, &p.src)?;
        if now == Some(true) {
            continue;
        }
        if now.is_some() && p.keep_existing {
            report.say(format!(
                "kept {}: it differs from the shipped one (an operator's edit)",
                p.path.display()
            ));
            continue;
        }
        for d in missing_dirs(opts, &p.path) {
            if !state.dirs.contains(&d) {
                state.dirs.push(d);
            }
        }
        if !state.files.iter().any(|f| f.path == p.path) {
            let backup = match now {
                Some(_) => {
                    let name = format!("file-{}", state.files.len());
                    fs::copy(&at, state_dir.join(&name))
                        .with_context(|| format!("keeping {}", at.display()))?;
                    Some(name)
                }
                None => None,
            };
            state.files.push(PlacedFile {
                path: p.path.clone(),
                backup,
            });
        }
        place(&at, &p.src, p.mode)?;
        report.say(format!(
            "{} {}",
            if now.is_some() { "replaced" } else { "put" },
            p.path.display()
        ));
    }
    for h in &handlers {
        if !state.handlers.contains(h) {
            state.handlers.push(h.clone());
        }
    }
    if added.is_empty() {
        report.say(format!(
            "{}: the handlers are there already, unchanged",
            opts.config.display()
        ));
        save_state(opts, &state)?;
        return Ok(report);
    }
    let mode = fs::metadata(&file)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644);
    put(
        &state_dir.join("config.installed"),
        merged.as_bytes(),
        0o600,
    )?;
    save_state(opts, &state)?;
    put(&file, merged.as_bytes(), mode)?;
    report.say(format!(
        "{}: added {} (config version {version}); the original is kept in {}",
        opts.config.display(),
        added.join(", "),
        STATE_DIR
    ));
    restart(opts, &mut report)?;
    Ok(report)
}

/// `strata uninstall`.
pub fn uninstall(opts: &Options) -> Result<Report> {
    check_restart(opts)?;
    let mut report = Report::default();
    let Some(state) = load_state(opts)? else {
        report.say(format!(
            "nothing to uninstall: {} holds no record of an install",
            STATE_DIR
        ));
        return Ok(report);
    };
    let state_dir = opts.state_dir();
    let file = opts.host(&state.config);
    let now = match fs::read(&file) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    let installed = fs::read(state_dir.join("config.installed")).ok();
    let restored: Option<Option<Vec<u8>>> = if now.is_some() && now == installed {
        // Untouched since install: the original, byte for byte (or no file, as before).
        Some(if state.config_existed {
            Some(fs::read(state_dir.join("config.orig")).context("reading the kept original")?)
        } else {
            None
        })
    } else if let Some(now) = &now {
        // Edited since: Strata's handlers out, the edits kept.
        let text = String::from_utf8_lossy(now).into_owned();
        let mut doc: DocumentMut = text.parse().with_context(|| {
            format!("{} is not valid TOML; nothing was changed", file.display())
        })?;
        let mut removed = Vec::new();
        if let Some(runtimes) = doc
            .get_mut("plugins")
            .and_then(|p| p.get_mut(cri_plugin(state.version)))
            .and_then(|p| p.get_mut("containerd"))
            .and_then(|p| p.get_mut("runtimes"))
            .and_then(Item::as_table_mut)
        {
            for h in &state.handlers {
                let ours = BackendKind::ALL
                    .into_iter()
                    .find(|t| format!("strata-{t}") == *h)
                    .map(|t| shipped_handler(state.version, t))
                    .transpose()?;
                let same = match (runtimes.get(h), ours) {
                    (Some(item), Some(ours)) => plain(item) == plain(&Item::Table(ours)),
                    _ => false,
                };
                if same {
                    runtimes.remove(h);
                    removed.push(h.clone());
                }
            }
        }
        report.say(format!(
            "{} was edited since install: removed {} and kept the rest",
            state.config.display(),
            if removed.is_empty() {
                "nothing".to_string()
            } else {
                removed.join(", ")
            }
        ));
        Some(Some(doc.to_string().into_bytes()))
    } else {
        report.say(format!("{} is gone; left so", state.config.display()));
        None
    };
    let config_changed = match &restored {
        Some(Some(bytes)) if now.as_deref() != Some(&bytes[..]) => {
            if opts.dry_run {
                report.diff = diff(
                    &state.config,
                    &String::from_utf8_lossy(now.as_deref().unwrap_or_default()),
                    &String::from_utf8_lossy(bytes),
                )?;
            } else {
                let mode = fs::metadata(&file)
                    .map(|m| m.permissions().mode() & 0o7777)
                    .unwrap_or(0o644);
                put(&file, bytes, mode)?;
            }
            report.say(format!("restored {}", state.config.display()));
            true
        }
        Some(None) => {
            if !opts.dry_run {
                fs::remove_file(&file).with_context(|| format!("removing {}", file.display()))?;
            }
            report.say(format!(
                "removed {} (there was none before install)",
                state.config.display()
            ));
            true
        }
        _ => false,
    };
    for f in state.files.iter().rev() {
        let at = opts.host(&f.path);
        match &f.backup {
            Some(name) => {
                if !opts.dry_run {
                    let mode = fs::metadata(&at)
                        .map(|m| m.permissions().mode() & 0o7777)
                        .unwrap_or(0o755);
                    place(&at, &Source::File(state_dir.join(name)), mode)?;
                }
                report.say(format!("restored {}", f.path.display()));
            }
            None => {
                if !opts.dry_run {
                    match fs::remove_file(&at) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(e).with_context(|| format!("removing {}", at.display()))
                        }
                    }
                }
                report.say(format!("removed {}", f.path.display()));
            }
        }
    }
    if opts.dry_run {
        return Ok(report);
    }
    fs::remove_dir_all(&state_dir).with_context(|| format!("removing {}", state_dir.display()))?;
    let mut dirs = state.dirs.clone();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in dirs {
        let _ = fs::remove_dir(opts.host(&d)); // only if empty
    }
    if config_changed {
        restart(opts, &mut report)?;
    }
    Ok(report)
}

/// Restarts containerd so that it reads its changed configuration.
fn restart(opts: &Options, report: &mut Report) -> Result<()> {
    match opts.restart {
        Restart::Never => {
            report.say("containerd not restarted (--restart=never): restart it to load the change")
        }
        Restart::Pid(pid) => {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            )
            .with_context(|| format!("signalling containerd (pid {pid})"))?;
            report.say(format!(
                "sent SIGTERM to containerd (pid {pid}); its supervisor starts it again"
            ));
        }
        Restart::Auto if opts.root != Path::new("/") && !opts.host_namespaces => {
            report.say(format!(
                "containerd not restarted: the root is {}, not this node's",
                opts.root.display()
            ))
        }
        Restart::Auto | Restart::Systemd => {
            if !systemd_runs_containerd(opts) {
                if opts.restart == Restart::Systemd {
                    bail!("systemd does not run containerd here (systemctl is-active containerd)");
                }
                report.say("containerd is not run by systemd here: restart it to load the change (or --containerd-pid PID)");
                return Ok(());
            }
            let st = node_command(opts, Path::new("systemctl"))
                .args(["restart", "containerd"])
                .status()
                .context("running systemctl restart containerd")?;
            if !st.success() {
                bail!("systemctl restart containerd failed ({st})");
            }
            report.say("restarted containerd (systemctl restart containerd)");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_every_packaging() {
        assert_eq!(
            parse_containerd_version(
                "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1"
            ),
            Some((1, 6))
        );
        assert_eq!(
            parse_containerd_version("containerd github.com/containerd/containerd/v2 v2.1.9 abc"),
            Some((2, 1))
        );
        assert_eq!(
            parse_containerd_version(
                "containerd github.com/containerd/containerd/v2 2.1.9+unknown "
            ),
            Some((2, 1))
        );
        assert_eq!(parse_containerd_version("containerd"), None);
    }

    #[test]
    fn wildcards_match_as_containerd_imports_do() {
        assert!(wildcard("*.toml", "a.toml"));
        assert!(wildcard("*.toml", ".toml"));
        assert!(!wildcard("*.toml", "a.toml.bak"));
        assert!(wildcard("cri-*.toml", "cri-x.toml"));
        assert!(!wildcard("cri-*.toml", "x.toml"));
    }

    #[test]
    fn the_shipped_handlers_are_there_for_both_versions() {
        for v in [2, 3] {
            for t in BackendKind::ALL {
                let h = shipped_handler(v, t).unwrap();
                assert_eq!(
                    h.get("runtime_type").and_then(Item::as_str),
                    Some(crate::RUNTIME_TYPE)
                );
                assert!(h.position().is_none());
            }
        }
    }

    #[test]
    fn merge_keeps_comments_and_refuses_a_different_handler() {
        let text = "# mine\nversion = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\" # the default\n";
        let mut doc: DocumentMut = text.parse().unwrap();
        let added = merge(&mut doc, 2, &BackendKind::ALL, Path::new("c.toml")).unwrap();
        assert_eq!(added.len(), 4);
        let out = doc.to_string();
        assert!(out.starts_with(text), "{out}");
        let mut again: DocumentMut = out.parse().unwrap();
        assert!(merge(&mut again, 2, &BackendKind::ALL, Path::new("c.toml"))
            .unwrap()
            .is_empty());
        assert_eq!(again.to_string(), out);

        let clash = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.strata-wasm]\nruntime_type = \"io.containerd.wasmtime.v1\"\n";
        let mut doc: DocumentMut = clash.parse().unwrap();
        let e = merge(&mut doc, 2, &BackendKind::ALL, Path::new("c.toml")).unwrap_err();
        assert!(format!("{e}").contains("strata-wasm"), "{e}");
    }

    #[test]
    fn a_config_without_version_is_refused_unless_empty() {
        let empty: DocumentMut = "# nothing yet\n".parse().unwrap();
        assert_eq!(config_version(&empty, (1, 7), Path::new("c")).unwrap(), 2);
        assert_eq!(config_version(&empty, (2, 1), Path::new("c")).unwrap(), 3);
        let v1: DocumentMut = "[plugins.cri]\nx = 1\n".parse().unwrap();
        assert!(config_version(&v1, (1, 6), Path::new("c")).is_err());
        let v3: DocumentMut = "version = 3\n".parse().unwrap();
        assert!(config_version(&v3, (1, 6), Path::new("c")).is_err());
        assert_eq!(config_version(&v3, (2, 1), Path::new("c")).unwrap(), 3);
    }
}

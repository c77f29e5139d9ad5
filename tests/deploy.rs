//! The deployment files under `deploy/`, checked with the real tools: `kustomize build` of the
//! base and every overlay, `helm lint --strict` and `helm template` of the chart (default values
//! and both tier values files), every rendered manifest through `kubeconform -strict` against
//! offline Kubernetes and Istio schemas (scripts/peers/install.sh: helm, kustomize, kubeconform,
//! kubeschemas), every pipeline embedded in a ConfigMap through `meshgate validate`, and the
//! wiring between the pieces (Services select their pods, probes and Service ports name real
//! container ports, pipelines listen where the pods expose, tier 1 routes to tier 2's headless
//! Service, Istio and Linkerd point at the gateway, the image builds what the manifests run).

mod common;

use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Component types a deploy pipeline may name before the binary has them: the tier-1 pipeline
/// routes with `loadbalancing`, written alongside these manifests. Such a pipeline is validated
/// as soon as `meshgate components` lists the type; until then the test says it skipped it.
const PENDING_COMPONENTS: &[&str] = &["loadbalancing"];

const NAMESPACE: &str = "observability";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy(rel: &str) -> PathBuf {
    root().join("deploy").join(rel)
}

/// The manifest tools and schemas installed by scripts/peers/install.sh.
struct Tools {
    helm: PathBuf,
    kustomize: PathBuf,
    kubeconform: PathBuf,
    schemas: PathBuf,
    /// The schema peer's Python (PyYAML), running scripts/peers/kube_schemas.py yaml2json.
    python: PathBuf,
}

fn tools() -> Option<Tools> {
    let helm = common::peer("MESHGATE_HELM", "bin/helm", "helm")?;
    let kustomize = common::peer("MESHGATE_KUSTOMIZE", "bin/kustomize", "kustomize")?;
    let kubeconform = common::peer("MESHGATE_KUBECONFORM", "bin/kubeconform", "kubeconform")?;
    let schemas = common::peer(
        "MESHGATE_KUBE_SCHEMAS",
        "kube-schemas",
        "offline Kubernetes schemas (kubeschemas)",
    )?;
    let python = schemas.join("venv/bin/python");
    if !python.exists() {
        // The directory is there but incomplete: an interrupted install, never a skip.
        panic!(
            "{} missing: re-run scripts/peers/install.sh kubeschemas",
            python.display()
        );
    }
    Some(Tools {
        helm,
        kustomize,
        kubeconform,
        schemas,
        python,
    })
}

/// Runs a command, panicking with its stderr when it fails; returns stdout.
fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

impl Tools {
    fn kustomize_build(&self, dir: &Path) -> String {
        run(
            Command::new(&self.kustomize).arg("build").arg(dir),
            &format!("kustomize build {}", dir.display()),
        )
    }

    /// `helm template` of the chart in namespace observability at the chart's minimum
    /// Kubernetes version.
    fn helm_template(&self, release: &str, values: &[&Path], extra: &[&str]) -> String {
        let mut cmd = Command::new(&self.helm);
        cmd.args(["template", release])
            .arg(deploy("helm/meshgate"))
            .args(["--namespace", NAMESPACE, "--kube-version", MIN_KUBE]);
        for v in values {
            cmd.arg("--values").arg(v);
        }
        cmd.args(extra);
        run(
            &mut cmd,
            &format!("helm template {release} {values:?} {extra:?}"),
        )
    }

    /// A YAML stream as its documents.
    fn yaml_docs(&self, yaml: &str) -> Vec<Value> {
        let mut child = Command::new(&self.python)
            .arg(root().join("scripts/peers/kube_schemas.py"))
            .arg("yaml2json")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start kube_schemas.py yaml2json");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(yaml.as_bytes()).expect("write YAML");
        }
        let out = child.wait_with_output().expect("yaml2json");
        assert!(
            out.status.success(),
            "yaml2json failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        match serde_json::from_slice(&out.stdout).expect("yaml2json output is JSON") {
            Value::Array(docs) => docs,
            other => panic!("yaml2json gave {other}"),
        }
    }

    /// The Kubernetes versions whose schemas are installed (`1.30.0`, ...); must include the
    /// chart's minimum.
    fn kube_versions(&self) -> Vec<String> {
        let dir = self.schemas.join("kubernetes");
        let mut versions: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_prefix('v')?
                    .strip_suffix("-standalone-strict")
                    .map(str::to_string)
            })
            .collect();
        versions.sort();
        assert!(
            versions.iter().any(|v| v == MIN_KUBE),
            "no schemas for Kubernetes {MIN_KUBE} (the chart's minimum) in {}: {versions:?}",
            dir.display()
        );
        versions
    }

    /// `kubeconform -strict` on `yaml` for every installed Kubernetes version; returns the
    /// summary of the last run. Fails unless every resource is valid (none skipped, none
    /// without a schema).
    fn kubeconform(&self, scratch: &common::Scratch, name: &str, yaml: &str) {
        let resources = self.yaml_docs(yaml).len() as u64;
        assert!(resources > 0, "{name}: nothing to validate");
        for version in self.kube_versions() {
            let summary = self.kubeconform_summary(scratch, name, yaml, &version);
            assert_eq!(
                summary["summary"],
                json!({"valid": resources, "invalid": 0, "errors": 0, "skipped": 0}),
                "{name} against Kubernetes {version}:\n{summary:#}"
            );
        }
    }

    fn kubeconform_summary(
        &self,
        scratch: &common::Scratch,
        name: &str,
        yaml: &str,
        version: &str,
    ) -> Value {
        let file = scratch.path(&format!("{}.yaml", name.replace(['/', ' '], "_")));
        std::fs::write(&file, yaml).expect("write manifest");
        let s = self.schemas.display();
        let out = Command::new(&self.kubeconform)
            .args(["-strict", "-summary", "-output", "json", "-kubernetes-version"])
            .arg(version)
            .arg("-schema-location")
            .arg(format!(
                "{s}/kubernetes/{{{{ .NormalizedKubernetesVersion }}}}-standalone{{{{ .StrictSuffix }}}}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json"
            ))
            .arg("-schema-location")
            .arg(format!(
                "{s}/crds/{{{{ .Group }}}}/{{{{ .ResourceKind }}}}_{{{{ .ResourceAPIVersion }}}}.json"
            ))
            .arg(&file)
            .output()
            .expect("run kubeconform");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "kubeconform output is not JSON ({e}); stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
}

/// The oldest Kubernetes the manifests support (Chart.yaml kubeVersion; preStop sleep action).
const MIN_KUBE: &str = "1.30.0";

// ---- manifest model ------------------------------------------------------------------------

fn kind_docs<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or("?")
}

fn str_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether every label of `selector` is on `labels`.
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The port of a `host:port` endpoint.
fn endpoint_port(endpoint: &str) -> u16 {
    endpoint
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("endpoint {endpoint:?} has no port"))
}

/// A meshgate pipeline as JSON, from YAML text.
fn pipeline_json(t: &Tools, yaml: &str) -> Value {
    let mut docs = t.yaml_docs(yaml);
    assert_eq!(docs.len(), 1, "a pipeline is one YAML document");
    docs.remove(0)
}

/// Receiver ports a pipeline listens on, and its admin port.
fn pipeline_ports(p: &Value) -> (BTreeSet<u16>, u16) {
    let mut ports = BTreeSet::new();
    for (id, r) in p["receivers"].as_object().expect("receivers") {
        let ty = id.split('/').next().unwrap_or(id);
        match ty {
            "otlp" => {
                for proto in ["grpc", "http"] {
                    if let Some(ep) = r["protocols"][proto]["endpoint"].as_str() {
                        ports.insert(endpoint_port(ep));
                    } else if r["protocols"].get(proto).is_some() {
                        panic!("receiver {id}: protocol {proto} without an explicit endpoint");
                    }
                }
            }
            "zipkin" => {
                ports.insert(endpoint_port(
                    r["endpoint"].as_str().expect("zipkin endpoint"),
                ));
            }
            other => panic!("receiver type {other} not known to this test"),
        }
    }
    let admin = endpoint_port(
        p["service"]["telemetry"]["admin"]["endpoint"]
            .as_str()
            .expect("service.telemetry.admin.endpoint (the probes need it off loopback)"),
    );
    (ports, admin)
}

/// One meshgate Deployment with its pipeline, as rendered.
struct Gateway<'a> {
    deployment: &'a Value,
    container: &'a Value,
    pipeline: Value,
    pipeline_text: String,
    env: Vec<(String, String)>,
}

/// Checks the wiring of every Deployment, Service, HPA and PDB in a rendered manifest set and
/// returns its gateways. `what` names the set in failures.
fn check_wiring<'a>(t: &Tools, what: &str, docs: &'a [Value]) -> Vec<Gateway<'a>> {
    let deployments = kind_docs(docs, "Deployment");
    assert!(!deployments.is_empty(), "{what}: no Deployment");
    let mut gateways = Vec::new();
    for d in &deployments {
        let dn = format!("{what}: Deployment {}", name(d));
        let spec = &d["spec"]["template"]["spec"];
        let pod_labels = str_map(&d["spec"]["template"]["metadata"]["labels"]);
        assert!(
            selects(&str_map(&d["spec"]["selector"]["matchLabels"]), &pod_labels),
            "{dn}: selector does not select its own pods"
        );
        assert_eq!(
            spec["securityContext"]["runAsNonRoot"], true,
            "{dn}: runAsNonRoot"
        );
        let containers = spec["containers"].as_array().expect("containers");
        assert_eq!(containers.len(), 1, "{dn}: one container");
        let c = &containers[0];
        let ports: BTreeMap<String, u16> = c["ports"]
            .as_array()
            .expect("container ports")
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().expect("named port").to_string(),
                    p["containerPort"].as_u64().expect("containerPort") as u16,
                )
            })
            .collect();
        let resolve = |port: &Value| -> u16 {
            match port {
                Value::String(n) => *ports
                    .get(n)
                    .unwrap_or_else(|| panic!("{dn}: port name {n} is not a container port")),
                Value::Number(n) => n.as_u64().expect("port") as u16,
                other => panic!("{dn}: port {other}"),
            }
        };
        for (probe, path) in [
            ("startupProbe", "/healthz"),
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
        ] {
            assert_eq!(c[probe]["httpGet"]["path"], path, "{dn}: {probe} path");
        }
        let probe_port = resolve(&c["readinessProbe"]["httpGet"]["port"]);
        assert_eq!(
            resolve(&c["livenessProbe"]["httpGet"]["port"]),
            probe_port,
            "{dn}: liveness and readiness on the admin port"
        );
        for r in ["cpu", "memory"] {
            assert!(
                c["resources"]["requests"][r].is_string()
                    || c["resources"]["requests"][r].is_number(),
                "{dn}: no {r} request"
            );
        }
        assert!(
            c["resources"]["limits"]["memory"].is_string(),
            "{dn}: no memory limit (memory_limiter's percentages are of it)"
        );
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true, "{dn}");
        assert_eq!(
            c["securityContext"]["allowPrivilegeEscalation"], false,
            "{dn}"
        );

        // The config file named on the command line is the ConfigMap's key, mounted.
        let args: Vec<&str> = c["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| a.as_str().expect("string arg"))
            .collect();
        assert_eq!(args.first(), Some(&"run"), "{dn}: args {args:?}");
        let cfg_path = args
            .windows(2)
            .find(|w| w[0] == "-c")
            .map(|w| w[1])
            .unwrap_or_else(|| panic!("{dn}: no -c in {args:?}"));
        let (dir, file) = cfg_path.rsplit_once('/').expect("absolute config path");
        let mount = c["volumeMounts"]
            .as_array()
            .expect("volumeMounts")
            .iter()
            .find(|m| m["mountPath"] == dir)
            .unwrap_or_else(|| panic!("{dn}: nothing mounted at {dir}"));
        let volume = spec["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == mount["name"])
            .expect("mounted volume");
        let cm_name = volume["configMap"]["name"]
            .as_str()
            .unwrap_or_else(|| panic!("{dn}: {dir} is not a ConfigMap"));
        let cm = kind_docs(docs, "ConfigMap")
            .into_iter()
            .find(|cm| name(cm) == cm_name)
            .unwrap_or_else(|| panic!("{dn}: ConfigMap {cm_name} is not in the manifests"));
        let pipeline_text = cm["data"][file]
            .as_str()
            .unwrap_or_else(|| panic!("{dn}: ConfigMap {cm_name} has no key {file}"))
            .to_string();
        let pipeline = pipeline_json(t, &pipeline_text);

        // The pipeline listens exactly on the container's ports; the probes reach its admin.
        let (receiver_ports, admin) = pipeline_ports(&pipeline);
        assert_eq!(admin, probe_port, "{dn}: probes vs admin endpoint");
        let exposed: BTreeSet<u16> = ports.values().copied().filter(|p| *p != admin).collect();
        assert_eq!(
            exposed, receiver_ports,
            "{dn}: container ports (without admin) vs the pipeline's receiver endpoints"
        );
        if let Some(sa) = spec["serviceAccountName"].as_str() {
            assert!(
                kind_docs(docs, "ServiceAccount")
                    .iter()
                    .any(|s| name(s) == sa),
                "{dn}: ServiceAccount {sa} is not in the manifests"
            );
        }
        let env = c["env"]
            .as_array()
            .map(|e| {
                e.iter()
                    .filter_map(|v| {
                        Some((
                            v["name"].as_str()?.to_string(),
                            v["value"].as_str()?.to_string(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        gateways.push(Gateway {
            deployment: d,
            container: c,
            pipeline,
            pipeline_text,
            env,
        });
    }

    let pods_of = |selector: &BTreeMap<String, String>| -> Vec<&Gateway> {
        gateways
            .iter()
            .filter(|g| {
                selects(
                    selector,
                    &str_map(&g.deployment["spec"]["template"]["metadata"]["labels"]),
                )
            })
            .collect()
    };
    for s in kind_docs(docs, "Service") {
        let sn = format!("{what}: Service {}", name(s));
        let selected = pods_of(&str_map(&s["spec"]["selector"]));
        assert_eq!(
            selected.len(),
            1,
            "{sn}: selects the pods of {} Deployments",
            selected.len()
        );
        let ports: BTreeSet<&str> = selected[0].container["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        for p in s["spec"]["ports"].as_array().expect("Service ports") {
            let target = p["targetPort"].as_str().expect("named targetPort");
            assert!(
                ports.contains(target),
                "{sn}: targetPort {target} is not a port of the selected pods ({ports:?})"
            );
        }
    }
    for h in kind_docs(docs, "HorizontalPodAutoscaler") {
        let target = &h["spec"]["scaleTargetRef"];
        assert!(
            target["kind"] == "Deployment"
                && deployments
                    .iter()
                    .any(|d| d["metadata"]["name"] == target["name"]),
            "{what}: HPA {} scales {target}, not a Deployment here",
            name(h)
        );
        assert!(h["spec"]["minReplicas"].as_u64() <= h["spec"]["maxReplicas"].as_u64());
    }
    for p in kind_docs(docs, "PodDisruptionBudget") {
        assert_eq!(
            pods_of(&str_map(&p["spec"]["selector"]["matchLabels"])).len(),
            1,
            "{what}: PDB {} must cover exactly one Deployment's pods",
            name(p)
        );
    }
    gateways
}

fn headless_services(docs: &[Value]) -> Vec<&Value> {
    kind_docs(docs, "Service")
        .into_iter()
        .filter(|s| s["spec"]["clusterIP"] == "None")
        .collect()
}

/// Tier 1 routes by trace id to tier 2's pods: the resolver names tier 2's headless Service
/// (full DNS name), on the port where tier 2's OTLP/gRPC receiver listens.
fn check_two_tier(what: &str, docs: &[Value], gateways: &[Gateway]) {
    let tier1: Vec<&Gateway> = gateways
        .iter()
        .filter(|g| g.pipeline["exporters"].get("loadbalancing").is_some())
        .collect();
    assert_eq!(tier1.len(), 1, "{what}: one tier-1 Deployment");
    let lb = &tier1[0].pipeline["exporters"]["loadbalancing"];
    assert_eq!(lb["routing_key"], "traceID", "{what}: routing key");
    let hostname = lb["resolver"]["dns"]["hostname"]
        .as_str()
        .expect("resolver.dns.hostname");
    let port = lb["resolver"]["dns"]["port"]
        .as_u64()
        .expect("resolver.dns.port") as u16;
    let svc = headless_services(docs)
        .into_iter()
        .find(|s| {
            format!(
                "{}.{}.svc.cluster.local",
                name(s),
                s["metadata"]["namespace"].as_str().unwrap_or(NAMESPACE)
            ) == hostname
        })
        .unwrap_or_else(|| {
            panic!("{what}: tier 1 resolves {hostname}, no headless Service here has that name")
        });
    let tier2: Vec<&Gateway> = gateways
        .iter()
        .filter(|g| {
            selects(
                &str_map(&svc["spec"]["selector"]),
                &str_map(&g.deployment["spec"]["template"]["metadata"]["labels"]),
            )
        })
        .collect();
    assert_eq!(
        tier2.len(),
        1,
        "{what}: {} selects one Deployment",
        name(svc)
    );
    assert!(
        tier2[0].pipeline["exporters"]
            .get("loadbalancing")
            .is_none(),
        "{what}: tier 1 would route to itself"
    );
    // A headless Service has no proxy: tier 1 dials the pod IP on `port` itself.
    let grpc = tier2[0].pipeline["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
        .as_str()
        .expect("tier 2 OTLP/gRPC receiver");
    assert_eq!(
        endpoint_port(grpc),
        port,
        "{what}: resolver port vs tier-2 receiver"
    );
    assert!(
        tier2[0].pipeline["connectors"]
            .get("servicegraph")
            .is_some()
            && tier1[0].pipeline["connectors"]
                .get("servicegraph")
                .is_none(),
        "{what}: servicegraph belongs in tier 2 only (it pairs spans of one trace)"
    );
    assert!(
        tier2[0].pipeline["processors"]
            .get("tail_sampling")
            .is_some(),
        "{what}: tail_sampling in tier 2"
    );
}

// ---- meshgate ------------------------------------------------------------------------------

/// Component types the binary has (`meshgate components`).
fn known_components() -> BTreeSet<String> {
    let out = run(
        Command::new(env!("CARGO_BIN_EXE_meshgate")).arg("components"),
        "meshgate components",
    );
    let types: BTreeSet<String> = out
        .lines()
        .filter(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    assert!(
        types.contains("otlp"),
        "unexpected `meshgate components` output:\n{out}"
    );
    types
}

fn component_types(p: &Value) -> BTreeSet<String> {
    ["receivers", "processors", "exporters", "connectors"]
        .iter()
        .filter_map(|s| p[*s].as_object())
        .flat_map(|m| m.keys())
        .map(|id| id.split('/').next().unwrap_or(id).to_string())
        .collect()
}

/// `meshgate validate` on a pipeline with the container's env; returns false (and says so)
/// when it names a component still pending (PENDING_COMPONENTS), true when it validated.
fn validate_pipeline(
    scratch: &common::Scratch,
    known: &BTreeSet<String>,
    what: &str,
    pipeline: &Value,
    text: &str,
    env: &[(String, String)],
) -> bool {
    let unknown: Vec<String> = component_types(pipeline)
        .into_iter()
        .filter(|t| !known.contains(t))
        .collect();
    if !unknown.is_empty() {
        assert!(
            unknown
                .iter()
                .all(|u| PENDING_COMPONENTS.contains(&u.as_str())),
            "{what}: component types {unknown:?} do not exist (meshgate components)"
        );
        eprintln!(
            "NOTE: {what}: not validated yet, `meshgate components` has no {unknown:?} (pending)"
        );
        return false;
    }
    let file = scratch.path(&format!(
        "{}.yaml",
        what.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    ));
    std::fs::write(&file, text).expect("write pipeline");
    let out = Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .arg("validate")
        .arg("-c")
        .arg(&file)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("run meshgate validate");
    assert!(
        out.status.success(),
        "{what}: meshgate validate failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

// ---- tests ---------------------------------------------------------------------------------

/// Every kustomization: builds, is valid Kubernetes (and Istio) at the oldest and newest
/// supported version, is wired consistently, and every pipeline in it validates.
#[test]
fn kustomize_base_and_overlays_build_valid_wired_manifests() {
    let Some(t) = tools() else { return };
    let scratch = common::Scratch::new("deploy-kustomize");
    let known = known_components();
    let mut validated = 0;
    for dir in [
        "kubernetes/base",
        "kubernetes/overlays/single-tier",
        "kubernetes/overlays/two-tier",
        "istio",
        "linkerd",
    ] {
        let yaml = t.kustomize_build(&deploy(dir));
        t.kubeconform(&scratch, dir, &yaml);
        let docs = t.yaml_docs(&yaml);
        let gateways = check_wiring(&t, dir, &docs);
        for g in &gateways {
            let what = format!("{dir} Deployment {}", name(g.deployment));
            validated += validate_pipeline(
                &scratch,
                &known,
                &what,
                &g.pipeline,
                &g.pipeline_text,
                &g.env,
            ) as usize;
        }
        for hpa in kind_docs(&docs, "HorizontalPodAutoscaler") {
            assert_eq!(
                hpa["spec"]["metrics"][0]["resource"]["name"], "cpu",
                "{dir}: HPA scales on CPU"
            );
        }
        assert_eq!(
            headless_services(&docs).len(),
            1,
            "{dir}: one headless Service (the base's, or tier 2's)"
        );
        if dir != "kubernetes/base" {
            for d in &docs {
                if d["kind"] != "Namespace" && d["kind"] != "Telemetry" {
                    assert_eq!(d["metadata"]["namespace"], NAMESPACE, "{dir}: {}", name(d));
                }
            }
        }
        if dir.ends_with("two-tier") {
            assert_eq!(gateways.len(), 2, "{dir}: two tiers");
            check_two_tier(dir, &docs, &gateways);
        }
    }
    // base, single-tier, istio, linkerd and tier 2 use only existing components.
    assert!(validated >= 5, "only {validated} pipelines validated");
}

/// The chart: lint is clean (strict) for the default values and both tier files, templates
/// render valid Kubernetes at every supported version, wiring holds, pipelines validate, and
/// values.schema.json rejects what it should.
#[test]
fn helm_chart_lints_renders_and_validates() {
    let Some(t) = tools() else { return };
    let scratch = common::Scratch::new("deploy-helm");
    let known = known_components();
    let chart = deploy("helm/meshgate");
    let tier1 = deploy("helm/values-tier1.yaml");
    let tier2 = deploy("helm/values-tier2.yaml");
    for values in [vec![], vec![tier1.as_path()], vec![tier2.as_path()]] {
        let mut cmd = Command::new(&t.helm);
        cmd.args(["lint", "--strict", "--namespace", NAMESPACE])
            .arg(&chart);
        for v in &values {
            cmd.arg("--values").arg(v);
        }
        let out = run(&mut cmd, &format!("helm lint --strict {values:?}"));
        assert!(
            out.contains("0 chart(s) failed")
                && !out.contains("[WARNING]")
                && !out.contains("[ERROR]"),
            "helm lint {values:?}:\n{out}"
        );
    }

    let mut validated = 0;
    let default = t.helm_template("meshgate", &[], &[]);
    let two_tier = format!(
        "{}\n---\n{}",
        t.helm_template("meshgate", &[&tier1], &[]),
        t.helm_template("meshgate-tier2", &[&tier2], &[])
    );
    for (what, yaml) in [("helm default", &default), ("helm tier1+tier2", &two_tier)] {
        t.kubeconform(&scratch, what, yaml);
        let docs = t.yaml_docs(yaml);
        let gateways = check_wiring(&t, what, &docs);
        for g in &gateways {
            let w = format!("{what} Deployment {}", name(g.deployment));
            validated +=
                validate_pipeline(&scratch, &known, &w, &g.pipeline, &g.pipeline_text, &g.env)
                    as usize;
        }
        if what.contains("tier2") {
            check_two_tier(what, &docs, &gateways);
        } else {
            assert_eq!(kind_docs(&docs, "HorizontalPodAutoscaler").len(), 1);
            assert_eq!(kind_docs(&docs, "PodDisruptionBudget").len(), 1);
            assert_eq!(headless_services(&docs).len(), 1);
        }
    }
    assert!(validated >= 2, "only {validated} pipelines validated");

    // `config` merges over the preset; `pipeline: custom` takes `config` alone.
    let merged = t.yaml_docs(&t.helm_template(
        "meshgate",
        &[],
        &[
            "--set",
            "config.processors.probabilistic_sampler.sampling_percentage=25",
        ],
    ));
    let cm = kind_docs(&merged, "ConfigMap")[0]["data"]["meshgate.yaml"]
        .as_str()
        .expect("pipeline")
        .to_string();
    let p = pipeline_json(&t, &cm);
    assert_eq!(
        p["processors"]["probabilistic_sampler"]["sampling_percentage"],
        25
    );
    assert_eq!(
        p["processors"]["probabilistic_sampler"]["hash_seed"],
        20240917
    );

    // The values schema turns typos and bad values into errors instead of silent defaults.
    for bad in [
        vec!["--set", "replicaCont=3"],
        vec!["--set", "pipeline=tier3"],
        vec!["--set", "image.pullPolicy=Sometimes"],
        vec!["--set", "pipeline=custom"],
    ] {
        let out = Command::new(&t.helm)
            .args(["template", "meshgate"])
            .arg(&chart)
            .args(["--kube-version", MIN_KUBE])
            .args(&bad)
            .output()
            .expect("run helm");
        assert!(
            !out.status.success(),
            "helm template {bad:?} should fail:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// The chart's pipeline presets are the kustomize pipelines (one source of truth in spirit:
/// the test keeps the two copies equal), except for tier 1's resolver hostname, which follows
/// each tool's naming of the tier-2 headless Service.
#[test]
fn helm_presets_match_the_kustomize_pipelines() {
    let Some(t) = tools() else { return };
    let read = |rel: &str| {
        pipeline_json(
            &t,
            &std::fs::read_to_string(deploy(rel)).unwrap_or_else(|e| panic!("{rel}: {e}")),
        )
    };
    let rendered = |release: &str, values: &[&Path]| {
        let docs = t.yaml_docs(&t.helm_template(release, values, &[]));
        let cm = kind_docs(&docs, "ConfigMap")[0]["data"]["meshgate.yaml"]
            .as_str()
            .expect("pipeline")
            .to_string();
        pipeline_json(&t, &cm)
    };
    assert_eq!(
        rendered("meshgate", &[]),
        read("kubernetes/base/pipeline.yaml"),
        "chart `pipeline: single` vs deploy/kubernetes/base/pipeline.yaml"
    );
    assert_eq!(
        rendered("meshgate-tier2", &[&deploy("helm/values-tier2.yaml")]),
        read("kubernetes/overlays/two-tier/tier2/pipeline.yaml"),
        "chart `pipeline: tier2` vs the kustomize tier 2"
    );
    let mut helm1 = rendered("meshgate", &[&deploy("helm/values-tier1.yaml")]);
    let mut kust1 = read("kubernetes/overlays/two-tier/tier1/pipeline.yaml");
    let host = "/exporters/loadbalancing/resolver/dns/hostname";
    assert_eq!(
        helm1.pointer(host).and_then(Value::as_str),
        Some("meshgate-tier2-headless.observability.svc.cluster.local")
    );
    *helm1.pointer_mut(host).expect("hostname") = json!("");
    *kust1.pointer_mut(host).expect("hostname") = json!("");
    assert_eq!(
        helm1, kust1,
        "chart `pipeline: tier1` vs the kustomize tier 1"
    );
}

/// Istio's MeshConfig providers and Linkerd's trace collector point at the gateway's Service
/// and ports as the manifests define them; the Telemetry resource turns on providers that are
/// registered (its schema is checked by kubeconform with Istio's CRD in the kustomize test).
#[test]
fn istio_and_linkerd_wiring_points_at_the_gateway() {
    let Some(t) = tools() else { return };
    let docs = t.yaml_docs(&t.kustomize_build(&deploy("kubernetes/overlays/single-tier")));
    let svc = kind_docs(&docs, "Service")
        .into_iter()
        .find(|s| name(s) == "meshgate")
        .expect("Service meshgate");
    let fqdn = format!("meshgate.{NAMESPACE}.svc.cluster.local");
    let port_named = |n: &str| -> u64 {
        svc["spec"]["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .find(|p| p["name"] == n)
            .and_then(|p| p["port"].as_u64())
            .unwrap_or_else(|| panic!("Service meshgate has no port {n}"))
    };
    // The same Service name and ports from the chart (release `meshgate`).
    let helm_docs = t.yaml_docs(&t.helm_template("meshgate", &[], &[]));
    let helm_svc = kind_docs(&helm_docs, "Service")
        .into_iter()
        .find(|s| name(s) == "meshgate")
        .expect("chart Service meshgate");
    assert_eq!(helm_svc["spec"]["ports"], svc["spec"]["ports"]);

    let text = |rel: &str| std::fs::read_to_string(deploy(rel)).expect("read");
    let values = t.yaml_docs(&text("istio/istiod-values.yaml"));
    let providers = &values[0]["meshConfig"]["extensionProviders"];
    let operator = t.yaml_docs(&text("istio/istio-operator.yaml"));
    assert_eq!(
        &operator[0]["spec"]["meshConfig"]["extensionProviders"], providers,
        "istio-operator.yaml and istiod-values.yaml register the same providers"
    );
    let mut names = BTreeSet::new();
    for p in providers.as_array().expect("extensionProviders") {
        let n = p["name"].as_str().expect("provider name");
        names.insert(n.to_string());
        let (kind, port_name) = if p.get("opentelemetry").is_some() {
            ("opentelemetry", "grpc-otlp")
        } else if p.get("envoyOtelAls").is_some() {
            ("envoyOtelAls", "grpc-otlp")
        } else if p.get("zipkin").is_some() {
            ("zipkin", "http-zipkin")
        } else {
            panic!("provider {n}: unexpected kind {p}")
        };
        assert_eq!(p[kind]["service"], fqdn.as_str(), "provider {n}");
        assert_eq!(
            p[kind]["port"].as_u64(),
            Some(port_named(port_name)),
            "provider {n}"
        );
    }
    let telemetry = t.yaml_docs(&text("istio/telemetry.yaml"));
    let mesh = telemetry
        .iter()
        .find(|d| d["metadata"]["namespace"] == "istio-system")
        .expect("mesh-wide Telemetry in istio-system");
    for section in ["tracing", "accessLogging"] {
        for entry in mesh["spec"][section].as_array().expect(section) {
            for p in entry["providers"].as_array().expect("providers") {
                let n = p["name"].as_str().expect("name");
                assert!(
                    names.contains(n),
                    "Telemetry {section} uses unregistered provider {n}"
                );
            }
        }
    }
    assert_eq!(mesh["spec"]["tracing"][0]["randomSamplingPercentage"], 100);
    let istio = t.yaml_docs(&t.kustomize_build(&deploy("istio")));
    let d = kind_docs(&istio, "Deployment")[0];
    assert_eq!(
        d["spec"]["template"]["metadata"]["annotations"]["sidecar.istio.io/inject"], "false",
        "meshgate's own pods run without a sidecar in the Istio kustomization"
    );

    let l = &t.yaml_docs(&text("linkerd/linkerd-jaeger-values.yaml"))[0];
    assert_eq!(
        l["webhook"]["collectorSvcAddr"],
        format!("{fqdn}:{}", port_named("grpc-otlp"))
    );
    assert_eq!(l["webhook"]["collectorTraceProtocol"], "opentelemetry");
    let sa = kind_docs(&docs, "Deployment")[0]["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .expect("serviceAccountName")
        .to_string();
    assert_eq!(
        l["webhook"]["collectorSvcAccount"],
        sa.as_str(),
        "the identity proxies expect"
    );
    assert_eq!(l["collector"]["enabled"], false);
    assert_eq!(l["jaeger"]["enabled"], false);
    let linkerd = t.yaml_docs(&t.kustomize_build(&deploy("linkerd")));
    let ns = kind_docs(&linkerd, "Namespace")[0];
    assert_eq!(
        ns["metadata"]["annotations"]["linkerd.io/inject"], "enabled",
        "meshgate's namespace is meshed (mTLS identity {sa})"
    );
}

/// The offline schemas really validate: strict mode rejects an unknown field and a wrong
/// type in a Deployment, a bad HPA and PDB, and an unknown field in an Istio Telemetry.
#[test]
fn kubeconform_schemas_reject_invalid_manifests() {
    let Some(t) = tools() else { return };
    let scratch = common::Scratch::new("deploy-negative");
    let docs = t.yaml_docs(&t.kustomize_build(&deploy("istio")));
    let pick = |kind: &str| kind_docs(&docs, kind)[0].clone();
    let mut cases: Vec<(&str, Value)> = Vec::new();
    let mut d = pick("Deployment");
    d["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = json!({});
    cases.push(("unknown container field", d));
    let mut d = pick("Deployment");
    d["spec"]["replicas"] = json!("two");
    cases.push(("replicas as a string", d));
    let mut h = pick("HorizontalPodAutoscaler");
    h["spec"]["metrics"][0]["resource"]["target"]["averageUtilisation"] = json!(70);
    cases.push(("misspelt HPA target", h));
    let mut p = pick("PodDisruptionBudget");
    p["spec"]["unhealthyPodEvictionPolicy"] = json!(["AlwaysAllow"]);
    cases.push(("PDB policy as a list", p));
    let mut tel = pick("Telemetry");
    tel["spec"]["tracing"][0]["samplingPercentage"] = json!(100);
    cases.push(("unknown Telemetry field", tel));
    for (what, doc) in cases {
        let yaml = serde_json::to_string(&doc).expect("json");
        let summary = t.kubeconform_summary(&scratch, what, &yaml, MIN_KUBE);
        assert_eq!(
            summary["summary"],
            json!({"valid": 0, "invalid": 1, "errors": 0, "skipped": 0}),
            "{what} must be invalid:\n{summary:#}"
        );
    }
}

/// The image build (deploy/Dockerfile; no Docker engine here, so it is checked, not run):
/// multi-stage, glibc of the builder = glibc of the distroless runtime, a non-root numeric
/// USER that the manifests also run as, the cargo invocation builds an existing binary with
/// the checked-in lock file, the context keeps every workspace member, the ports and config
/// path match the manifests, and the built-in pipeline validates.
#[test]
fn container_image_build_matches_the_workspace_and_manifests() {
    let dockerfile = std::fs::read_to_string(deploy("Dockerfile")).expect("deploy/Dockerfile");
    let lines: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    let instr = |name: &str| -> Vec<&str> {
        lines
            .iter()
            .filter_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .collect()
    };
    let froms = instr("FROM");
    assert_eq!(froms.len(), 2, "two stages (build, runtime): {froms:?}");
    let rust_version = instr("ARG")
        .iter()
        .find_map(|a| a.strip_prefix("RUST_VERSION="))
        .expect("ARG RUST_VERSION=");
    assert!(
        froms[0].contains("rust:${RUST_VERSION}-slim-bookworm") && froms[0].ends_with(" AS build"),
        "build stage: {}",
        froms[0]
    );
    assert!(
        froms[1].starts_with("gcr.io/distroless/cc-debian12:nonroot"),
        "runtime stage is distroless with glibc from the same Debian 12 as the builder: {}",
        froms[1]
    );
    // The builder's Rust is at least the workspace's rust-version.
    let cargo_toml = std::fs::read_to_string(root().join("Cargo.toml")).expect("Cargo.toml");
    let msrv = cargo_toml
        .lines()
        .find_map(|l| l.trim().strip_prefix("rust-version = "))
        .expect("rust-version")
        .trim_matches('"');
    let parse =
        |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().expect("version")).collect() };
    assert!(
        parse(rust_version) >= parse(msrv),
        "Rust {rust_version} < rust-version {msrv}"
    );

    // `cargo build --release --locked --bin meshgate`: the lock file is in sync and the bin exists.
    let build = lines
        .iter()
        .find(|l| l.contains("cargo build"))
        .expect("a cargo build step");
    for flag in ["--release", "--locked", "--bin meshgate"] {
        assert!(build.contains(flag), "cargo build without {flag}: {build}");
    }
    let meta = run(
        Command::new(env!("CARGO"))
            .args([
                "metadata",
                "--locked",
                "--offline",
                "--format-version",
                "1",
                "--no-deps",
            ])
            .arg("--manifest-path")
            .arg(root().join("Cargo.toml")),
        "cargo metadata --locked (what `cargo build --locked` in the image needs)",
    );
    let meta: Value = serde_json::from_str(&meta).expect("metadata JSON");
    assert!(
        meta["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .any(|p| {
                p["targets"].as_array().into_iter().flatten().any(|t| {
                    t["name"] == "meshgate"
                        && t["kind"]
                            .as_array()
                            .is_some_and(|k| k.contains(&json!("bin")))
                })
            }),
        "no bin target `meshgate`"
    );

    // The build context (COPY . .) keeps what cargo needs.
    let ignore = std::fs::read_to_string(deploy("Dockerfile.dockerignore")).expect("dockerignore");
    let ignored: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "src",
        "crates",
        "benches",
        "pipelines",
        "schemas",
        "deploy",
    ] {
        assert!(
            !ignored.iter().any(|i| i.trim_matches('/') == needed),
            "{needed} is excluded from the build context"
        );
        assert!(
            root().join(needed).exists(),
            "{needed} missing in the repository"
        );
    }
    assert!(
        ignored.contains(&"target") && ignored.contains(&".git"),
        "{ignored:?}"
    );

    // Runtime: non-root numeric user, same as the manifests' runAsUser.
    let user = *instr("USER").last().expect("USER in the runtime stage");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("numeric USER (runAsNonRoot needs it)");
    assert_ne!(uid, 0, "USER must not be root");
    let base =
        std::fs::read_to_string(deploy("kubernetes/base/deployment.yaml")).expect("deployment");
    assert!(
        base.contains(&format!("runAsUser: {uid}")),
        "manifests run as {uid}"
    );
    let chart_values =
        std::fs::read_to_string(deploy("helm/meshgate/values.yaml")).expect("values");
    assert!(
        chart_values.contains(&format!("runAsUser: {uid}")),
        "chart runs as {uid}"
    );

    // EXPOSE = the container ports of the manifests.
    let exposed: BTreeSet<u16> = instr("EXPOSE")
        .iter()
        .flat_map(|l| l.split_whitespace())
        .map(|p| p.parse().expect("port"))
        .collect();
    let manifest_ports: BTreeSet<u16> = base
        .lines()
        .filter_map(|l| l.trim().strip_prefix("containerPort: "))
        .map(|p| p.parse().expect("port"))
        .collect();
    assert_eq!(
        exposed, manifest_ports,
        "EXPOSE vs the Deployment's container ports"
    );

    // The config the image runs without arguments is where Kubernetes mounts the ConfigMap.
    let cmd = instr("CMD").last().copied().expect("CMD");
    assert!(cmd.contains("\"/etc/meshgate/meshgate.yaml\""), "{cmd}");
    assert!(
        base.contains("mountPath: /etc/meshgate\n"),
        "the manifests mount /etc/meshgate"
    );
    assert!(dockerfile.contains("deploy/container/meshgate.yaml /out/etc/meshgate/meshgate.yaml"));
    let out = Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .args(["validate", "-c"])
        .arg(deploy("container/meshgate.yaml"))
        .env_clear()
        .output()
        .expect("meshgate validate");
    assert!(
        out.status.success(),
        "deploy/container/meshgate.yaml: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The app version everywhere is the workspace's.
    let version = cargo_toml
        .lines()
        .find_map(|l| l.trim().strip_prefix("version = "))
        .expect("workspace version")
        .trim_matches('"');
    let chart = std::fs::read_to_string(deploy("helm/meshgate/Chart.yaml")).expect("Chart.yaml");
    assert!(
        chart.contains(&format!("appVersion: \"{version}\"")),
        "Chart appVersion = {version}"
    );
    let kust = std::fs::read_to_string(deploy("kubernetes/base/kustomization.yaml"))
        .expect("kustomization");
    assert!(
        kust.contains(&format!("newTag: {version}")),
        "kustomize image tag = {version}"
    );
}

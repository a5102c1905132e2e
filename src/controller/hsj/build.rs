//! The Job of one warm unit, built from the HSJ's `jobTemplate` (either form). Pure.
//!
//! Invariants:
//! - every unit is `completions: 1`, named `<hsj>-<random>` (generateName), controlled by its
//!   HSJ (ownerReference controller=true, so `kubectl delete hsj` takes its Jobs along), and
//!   labelled `hsj.paia.tech/name=<hsj>` plus the selector's labels, on the Job and its pods;
//! - `restartPolicy` defaults to `Never`, `ttlSecondsAfterFinished` to [`DEFAULT_TTL`], so
//!   finished Jobs do not pile up; what the user set is kept;
//! - a template that is not a Job template (unknown JobSpec fields, no containers, a
//!   restartPolicy a Job refuses, labels that clash with ours) is an error naming the field;
//!   nothing is created from it.
use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::api::hsj::HotStandbyJob;

/// Label every unit (Job and pod) carries: the HSJ's name.
pub const NAME_LABEL: &str = crate::api::hsj::NAME_LABEL;
/// `ttlSecondsAfterFinished` when the template has none.
pub const DEFAULT_TTL: i32 = 300;

/// JobSpec fields (batch/v1, up to Kubernetes 1.33) a full-form template may carry.
const JOB_SPEC_FIELDS: &[&str] = &[
    "activeDeadlineSeconds",
    "backoffLimit",
    "backoffLimitPerIndex",
    "completionMode",
    "completions",
    "managedBy",
    "manualSelector",
    "maxFailedIndexes",
    "parallelism",
    "podFailurePolicy",
    "podReplacementPolicy",
    "selector",
    "successPolicy",
    "suspend",
    "template",
    "ttlSecondsAfterFinished",
];

/// The labels of every unit of `hsj`: the selector's, then ours.
pub fn unit_labels(hsj: &HotStandbyJob) -> Result<BTreeMap<String, String>, String> {
    let mut labels = hsj
        .spec
        .selector
        .as_ref()
        .map(|s| s.match_labels.clone())
        .unwrap_or_default();
    if labels.contains_key(NAME_LABEL) {
        return Err(format!(
            "selector.matchLabels may not set {NAME_LABEL}: the operator sets it"
        ));
    }
    labels.insert(NAME_LABEL.to_string(), hsj.name_any());
    Ok(labels)
}

/// Problems that make `jobTemplate` unusable, before it is turned into a JobSpec.
fn template_problems(hsj: &HotStandbyJob) -> Vec<String> {
    let t = &hsj.spec.job_template;
    let mut e: Vec<String> = t
        .rest
        .keys()
        .filter(|k| !JOB_SPEC_FIELDS.contains(&k.as_str()))
        .map(|k| format!("jobTemplate.{k} is not a JobSpec field"))
        .collect();
    if t.image.as_deref().is_some_and(|i| i.trim().is_empty()) {
        e.push("jobTemplate.image must not be empty".into());
    }
    if t.template.is_none() && t.image.is_none() && (t.command.is_some() || t.args.is_some()) {
        e.push("jobTemplate: the shorthand needs `image`".into());
    }
    if t.parallelism.is_some_and(|p| p < 1) {
        e.push("jobTemplate.parallelism must be >= 1".into());
    }
    e
}

/// The Job of a new unit, or why none can be made.
pub fn unit_job(hsj: &HotStandbyJob) -> Result<Job, String> {
    let problems = template_problems(hsj);
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    let mut spec = hsj.spec.job_template.to_job_spec()?;
    let labels = unit_labels(hsj)?;
    let tpl = &mut spec.template;
    let pod = tpl
        .spec
        .as_mut()
        .ok_or("jobTemplate.template.spec is missing")?;
    if pod.containers.is_empty() {
        return Err("jobTemplate: the pod template has no containers".into());
    }
    match pod.restart_policy.as_deref() {
        None => pod.restart_policy = Some("Never".into()),
        Some("Never" | "OnFailure") => {}
        Some(other) => {
            return Err(format!(
                "jobTemplate: restartPolicy {other} is not allowed for a Job (Never or OnFailure)"
            ))
        }
    }
    let meta = tpl.metadata.get_or_insert_with(Default::default);
    meta.labels
        .get_or_insert_with(Default::default)
        .extend(labels.clone());
    let probe = &hsj.spec.busy_probe;
    crate::api::probe::mark_guarded(
        meta,
        (probe.mode == crate::api::hsj::JobBusyMode::Annotation)
            .then_some(probe.annotation_key.as_str()),
    );
    crate::api::claim::mark_assignment(meta, hsj.spec.assignment);
    spec.ttl_seconds_after_finished.get_or_insert(DEFAULT_TTL);
    spec.completions = Some(1);
    Ok(Job {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", hsj.name_any())),
            namespace: hsj.namespace(),
            labels: Some(labels),
            owner_references: hsj.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::hsj::HotStandbyJobSpec;

    fn hsj(template: serde_json::Value) -> HotStandbyJob {
        let spec: HotStandbyJobSpec =
            serde_json::from_value(serde_json::json!({"idleTarget": 2, "jobTemplate": template}))
                .unwrap();
        let mut h = HotStandbyJob::new("pool", spec);
        h.metadata.namespace = Some("ns".into());
        h.metadata.uid = Some("hsj-uid".into());
        h
    }

    use crate::api::probe::{BUSY_ANNOTATION_KEY_ANNOTATION, BUSY_GUARD_LABEL};

    #[test]
    fn assignment_file_marks_the_pod_template_for_the_claim_agent() {
        use crate::api::claim::{AssignmentMode, ASSIGNMENT_ANNOTATION};
        let mut h = hsj(serde_json::json!({"image": "busybox"}));
        let annotations = |h: &HotStandbyJob| {
            unit_job(h)
                .unwrap()
                .spec
                .unwrap()
                .template
                .metadata
                .unwrap()
                .annotations
                .unwrap_or_default()
        };
        assert!(!annotations(&h).contains_key(ASSIGNMENT_ANNOTATION));
        h.spec.assignment = AssignmentMode::File;
        assert_eq!(annotations(&h)[ASSIGNMENT_ANNOTATION], "file");
    }

    #[test]
    fn pods_are_guarded_and_name_a_custom_busy_annotation() {
        let mut h = hsj(serde_json::json!({"image": "busybox"}));
        let meta = |h: &HotStandbyJob| {
            unit_job(h)
                .unwrap()
                .spec
                .unwrap()
                .template
                .metadata
                .unwrap()
        };
        let m = meta(&h);
        assert_eq!(m.labels.unwrap()[BUSY_GUARD_LABEL], "true");
        assert!(!m
            .annotations
            .unwrap_or_default()
            .contains_key(BUSY_ANNOTATION_KEY_ANNOTATION));
        h.spec.busy_probe.annotation_key = "x.io/working".into();
        let m = meta(&h);
        assert_eq!(
            m.annotations.unwrap()[BUSY_ANNOTATION_KEY_ANNOTATION],
            "x.io/working"
        );
        // The Job object itself is not a pod: no guard label there.
        assert!(!unit_job(&h)
            .unwrap()
            .metadata
            .labels
            .unwrap()
            .contains_key(BUSY_GUARD_LABEL));
        // A template that opts out keeps its choice.
        let h = hsj(
            serde_json::json!({"template": {"metadata": {"labels": {BUSY_GUARD_LABEL: "false"}},
            "spec": {"containers": [{"name": "a", "image": "b"}]}}}),
        );
        assert_eq!(meta(&h).labels.unwrap()[BUSY_GUARD_LABEL], "false");
    }

    #[test]
    fn shorthand_unit_is_owned_labelled_and_defaulted() {
        let mut h = hsj(serde_json::json!({"image": "busybox", "command": ["sleep", "1"]}));
        h.spec.selector = Some(crate::api::probe::MatchLabels {
            match_labels: BTreeMap::from([("app".to_string(), "w".to_string())]),
        });
        let job = unit_job(&h).unwrap();
        assert_eq!(job.metadata.generate_name.as_deref(), Some("pool-"));
        assert_eq!(job.metadata.name, None);
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.uid.as_str(), owner.controller),
            ("hsj-uid", Some(true))
        );
        assert_eq!(owner.kind, "HotStandbyJob");
        let want = BTreeMap::from([
            ("app".to_string(), "w".to_string()),
            (NAME_LABEL.to_string(), "pool".to_string()),
        ]);
        assert_eq!(job.metadata.labels.as_ref(), Some(&want));
        let spec = job.spec.unwrap();
        assert_eq!(spec.completions, Some(1));
        assert_eq!(spec.ttl_seconds_after_finished, Some(DEFAULT_TTL));
        let pod_labels = spec.template.metadata.unwrap().labels.unwrap();
        let mut want_pod = want.clone();
        want_pod.insert(BUSY_GUARD_LABEL.to_string(), "true".to_string());
        assert_eq!(
            pod_labels, want_pod,
            "the pods carry the busy-guard label too"
        );
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    }

    #[test]
    fn full_form_keeps_what_the_user_set() {
        let h = hsj(serde_json::json!({
            "ttlSecondsAfterFinished": 60, "parallelism": 2, "activeDeadlineSeconds": 600,
            "template": {"metadata": {"labels": {"team": "a"}},
                         "spec": {"restartPolicy": "OnFailure", "containers": [{"name": "w", "image": "x"}]}}
        }));
        let spec = unit_job(&h).unwrap().spec.unwrap();
        assert_eq!(spec.ttl_seconds_after_finished, Some(60));
        assert_eq!(spec.parallelism, Some(2));
        assert_eq!(spec.active_deadline_seconds, Some(600));
        let labels = spec.template.metadata.unwrap().labels.unwrap();
        assert_eq!(labels.get("team").map(String::as_str), Some("a"));
        assert_eq!(labels.get(NAME_LABEL).map(String::as_str), Some("pool"));
        assert_eq!(
            spec.template.spec.unwrap().restart_policy.as_deref(),
            Some("OnFailure")
        );
    }

    #[test]
    fn bad_templates_name_the_problem() {
        let cases = [
            (
                serde_json::json!({"replicas": 3, "template": {"spec": {"containers": [{"name": "a", "image": "b"}]}}}),
                "jobTemplate.replicas is not a JobSpec field",
            ),
            (
                serde_json::json!({"command": ["x"]}),
                "the shorthand needs `image`",
            ),
            (
                serde_json::json!({}),
                "needs `template` or the shorthand `image`",
            ),
            (
                serde_json::json!({"template": {"spec": {"containers": []}}}),
                "no containers",
            ),
            (
                serde_json::json!({"template": {"metadata": {}}}),
                "template.spec is missing",
            ),
            (
                serde_json::json!({"template": {"spec": {"restartPolicy": "Always", "containers": [{"name": "a", "image": "b"}]}}}),
                "restartPolicy Always",
            ),
            (
                serde_json::json!({"image": "  "}),
                "image must not be empty",
            ),
            (
                serde_json::json!({"image": "x", "parallelism": 0}),
                "parallelism must be >= 1",
            ),
        ];
        for (t, want) in cases {
            let e = unit_job(&hsj(t.clone())).unwrap_err();
            assert!(e.contains(want), "{t}: {e}");
        }
    }

    #[test]
    fn the_selector_may_not_take_our_label() {
        let mut h = hsj(serde_json::json!({"image": "x"}));
        h.spec.selector = Some(crate::api::probe::MatchLabels {
            match_labels: BTreeMap::from([(NAME_LABEL.to_string(), "other".to_string())]),
        });
        assert!(unit_job(&h).unwrap_err().contains(NAME_LABEL));
    }
}

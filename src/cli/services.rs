//! Service names as targets of the container verbs, as Compose users type
//! them (`stack logs web`, `stack exec web sh`, `stack restart web`): when
//! the daemon has no container of that name and the current directory
//! holds a stack file (found as `stack up` finds it) whose stack has that
//! service, the verb applies to the service's containers, every replica in
//! replica order (`--index N` picks one). A real container name always
//! wins: the name is tried as a container first.
//!
//! Resolution is the client's: the stack's containers are the daemon's
//! containers labelled `stack.name=<stack>` and `stack.service=<service>`.

use std::cell::OnceCell;
use std::collections::BTreeSet;
use std::path::Path;

use crate::api::Listed;
use crate::api::client::{Client, ClientError};
use crate::daemon::stacks::StackStatus;
use crate::reconcile::desired::{LABEL_REPLICA, LABEL_SERVICE, LABEL_STACK};
use crate::spec::load::LoadOptions;

/// The stack of the current directory, as far as target resolution needs
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    /// The stack's name.
    pub stack: String,
    /// Its services, when its file loads (else the services are the ones
    /// its containers are labelled with).
    pub services: Option<BTreeSet<String>>,
}

/// One container of a stack's service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The container's id.
    pub id: String,
    /// Its name (`shop-web-1`).
    pub name: String,
    /// Its service.
    pub service: String,
    /// Its replica number.
    pub replica: u32,
}

impl Member {
    /// Compose's short name for log prefixes: `web-1`.
    pub fn short_name(&self) -> String {
        format!("{}-{}", self.service, self.replica)
    }
}

/// Why a name stands for no container.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Neither a container nor a service here: the daemon's own answer.
    #[error("No such container: {0}")]
    Unknown(String),
    /// A service of the stack with no container now.
    #[error("service {service} of stack {stack} has no containers (is the stack up?)")]
    Empty {
        /// The stack.
        stack: String,
        /// The service.
        service: String,
    },
    /// `--index` names a replica the service does not run.
    #[error("service {service} of stack {stack} has no replica {index} (it runs {replicas})")]
    MissingReplica {
        /// The stack.
        stack: String,
        /// The service.
        service: String,
        /// The replica asked for.
        index: u32,
        /// The replicas it has, in order.
        replicas: String,
    },
}

/// Whether the daemon answered that there is no container by that name.
pub fn is_no_such_container(e: &ClientError) -> bool {
    matches!(e, ClientError::Api { status: 404, message } if message.starts_with("No such container"))
}

/// The containers of stack `stack` in `listed`, by service and replica.
pub fn members(stack: &str, listed: &[Listed]) -> Vec<Member> {
    let mut found: Vec<Member> = listed
        .iter()
        .filter(|l| l.record.labels.get(LABEL_STACK).map(String::as_str) == Some(stack))
        .filter_map(|l| {
            let labels = &l.record.labels;
            Some(Member {
                id: l.record.id.clone(),
                name: l.record.name.clone(),
                service: labels.get(LABEL_SERVICE)?.clone(),
                replica: labels.get(LABEL_REPLICA)?.parse().ok()?,
            })
        })
        .collect();
    found.sort_by(|a, b| (&a.service, a.replica, &a.name).cmp(&(&b.service, b.replica, &b.name)));
    found
}

/// The containers `name` stands for, given that it is no container: the
/// containers of service `name` of `project` among `members` (the stack's
/// containers), in replica order, or only replica `index`.
pub fn select(
    name: &str,
    project: Option<&Project>,
    members: &[Member],
    index: Option<u32>,
) -> Result<Vec<Member>, TargetError> {
    let no_such = || TargetError::Unknown(name.to_string());
    let project = project.ok_or_else(no_such)?;
    let mine: Vec<Member> = members
        .iter()
        .filter(|m| m.service == name)
        .cloned()
        .collect();
    let declared = match &project.services {
        Some(services) => services.contains(name),
        None => !mine.is_empty(),
    };
    if !declared {
        return Err(no_such());
    }
    if mine.is_empty() {
        return Err(TargetError::Empty {
            stack: project.stack.clone(),
            service: name.to_string(),
        });
    }
    let Some(index) = index else {
        return Ok(mine);
    };
    let picked: Vec<Member> = mine
        .iter()
        .filter(|m| m.replica == index)
        .cloned()
        .collect();
    if picked.is_empty() {
        return Err(TargetError::MissingReplica {
            stack: project.stack.clone(),
            service: name.to_string(),
            index,
            replicas: mine
                .iter()
                .map(|m| m.replica.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(picked)
}

/// Resolves service names for one command: the project is found once,
/// when a name is first not a container.
#[derive(Debug)]
pub struct Services<'a> {
    client: &'a Client,
    project: OnceCell<Option<Project>>,
}

impl<'a> Services<'a> {
    /// A resolver that asks the daemon `client`.
    pub fn new(client: &'a Client) -> Services<'a> {
        Services {
            client,
            project: OnceCell::new(),
        }
    }

    /// The containers `name` stands for, knowing the daemon has no
    /// container of that name.
    /// The stack of the current directory, once [`Services::containers`]
    /// found it.
    pub fn stack(&self) -> Option<String> {
        self.project
            .get()
            .and_then(Option::as_ref)
            .map(|p| p.stack.clone())
    }

    pub fn containers(&self, name: &str, index: Option<u32>) -> miette::Result<Vec<Member>> {
        let project = self.project.get_or_init(|| find_project(self.client));
        let Some(project) = project else {
            return Err(miette::miette!("{}", TargetError::Unknown(name.into())));
        };
        let listed: Vec<Listed> = self
            .client
            .get("/containers/json")
            .flag("all", true)
            .send_json()
            .map_err(super::daemon::api_error)?;
        select(
            name,
            Some(project),
            &members(&project.stack, &listed),
            index,
        )
        .map_err(|e| miette::miette!("{e}"))
    }
}

/// The stack of the current directory: its file's name and services, or,
/// when the file does not load, the stack the daemon keeps for this
/// directory.
fn find_project(client: &Client) -> Option<Project> {
    let cwd = std::env::current_dir().ok()?;
    project_in(&cwd).or_else(|| registered_in(client, &cwd))
}

/// The stack whose file is in `dir`, when one is there and loads.
pub fn project_in(dir: &Path) -> Option<Project> {
    let options = LoadOptions {
        files: vec![],
        project_dir: dir.to_path_buf(),
        env_files: vec![],
        environment: None,
    };
    let loaded = crate::spec::load::load(&options).ok()?;
    Some(Project {
        stack: super::stacks::stack_name(loaded.spec.name.as_deref(), dir),
        services: Some(loaded.spec.services.keys().cloned().collect()),
    })
}

/// The stack the daemon keeps for project directory `dir` (found when
/// the file there is broken now).
fn registered_in(client: &Client, dir: &Path) -> Option<Project> {
    crate::spec::load::discover(dir).ok()?;
    let stacks: Vec<StackStatus> = client.get("/stacks").send_json().ok()?;
    stacks
        .into_iter()
        .find(|s| s.project_dir == dir)
        .map(|s| Project {
            stack: s.name,
            services: None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(service: &str, replica: u32) -> Member {
        Member {
            id: format!("id-{service}-{replica}"),
            name: format!("shop-{service}-{replica}"),
            service: service.into(),
            replica,
        }
    }

    fn shop(services: Option<&[&str]>) -> Project {
        Project {
            stack: "shop".into(),
            services: services.map(|s| s.iter().map(|s| s.to_string()).collect()),
        }
    }

    fn names(picked: &[Member]) -> Vec<&str> {
        picked.iter().map(|m| m.name.as_str()).collect()
    }

    #[test]
    fn a_service_stands_for_its_replicas_in_order() {
        let members = [member("db", 1), member("web", 1), member("web", 2)];
        let picked = select("web", Some(&shop(Some(&["web", "db"]))), &members, None).unwrap();
        assert_eq!(names(&picked), ["shop-web-1", "shop-web-2"]);
        let picked = select("web", Some(&shop(Some(&["web", "db"]))), &members, Some(2)).unwrap();
        assert_eq!(names(&picked), ["shop-web-2"]);
    }

    #[test]
    fn a_name_is_no_service_without_a_stack_here_or_outside_it() {
        let members = [member("web", 1)];
        assert_eq!(
            select("web", None, &members, None),
            Err(TargetError::Unknown("web".into()))
        );
        assert_eq!(
            select("api", Some(&shop(Some(&["web"]))), &members, None),
            Err(TargetError::Unknown("api".into()))
        );
        // The file says which services there are, whatever runs.
        assert_eq!(
            select("web", Some(&shop(Some(&["db"]))), &members, None),
            Err(TargetError::Unknown("web".into()))
        );
        // Without a file that loads, the labels do.
        let picked = select("web", Some(&shop(None)), &members, None).unwrap();
        assert_eq!(names(&picked), ["shop-web-1"]);
        assert_eq!(
            select("db", Some(&shop(None)), &members, None),
            Err(TargetError::Unknown("db".into()))
        );
    }

    #[test]
    fn a_declared_service_without_containers_or_that_replica_says_so() {
        let members = [member("web", 1), member("web", 3)];
        let err = select("db", Some(&shop(Some(&["web", "db"]))), &members, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "service db of stack shop has no containers (is the stack up?)"
        );
        let err = select("web", Some(&shop(Some(&["web"]))), &members, Some(2)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "service web of stack shop has no replica 2 (it runs 1, 3)"
        );
    }

    #[test]
    fn members_come_from_the_stack_labels_in_replica_order() {
        let listed: Vec<Listed> = [
            ("c", "shop", "web", "10"),
            ("a", "shop", "web", "2"),
            ("b", "other", "web", "1"),
            ("d", "shop", "db", "1"),
        ]
        .iter()
        .map(|(id, stack, service, replica)| {
            serde_json::from_value(serde_json::json!({
                "record": {
                    "id": id, "name": format!("{stack}-{service}-{replica}"),
                    "created": "", "image": "bb", "image_id": "", "cgroup": "",
                    "rootfs": {"lowers": [], "upper": "", "work": ""},
                    "labels": {
                        LABEL_STACK: stack, LABEL_SERVICE: service, LABEL_REPLICA: replica,
                    },
                },
                "state": {"status": "running"},
                "command": [],
            }))
            .unwrap()
        })
        .collect();
        let found = members("shop", &listed);
        assert_eq!(names(&found), ["shop-db-1", "shop-web-2", "shop-web-10"]);
        assert_eq!(found[1].short_name(), "web-2");
    }

    #[test]
    fn only_no_such_container_answers_fall_back_to_services() {
        let no = ClientError::Api {
            status: 404,
            message: "No such container: web".into(),
        };
        assert!(is_no_such_container(&no));
        let other = ClientError::Api {
            status: 404,
            message: "No such image: web".into(),
        };
        assert!(!is_no_such_container(&other));
        let conflict = ClientError::Api {
            status: 409,
            message: "No such container: web".into(),
        };
        assert!(!is_no_such_container(&conflict));
    }
}

//! Links, addresses and routes over rtnetlink: a bridge per network, and per container and
//! network a veth pair whose one end is on the bridge and whose other end is moved into the
//! container's network namespace, named, addressed and routed there.
//!
//! rtnetlink is asynchronous; each operation here runs it on a current-thread runtime of its
//! own on a scoped thread, so the callers (the CLI, a supervisor, the daemon's blocking pool)
//! need no runtime and never nest one. Work inside a container's namespace is done by that
//! thread after it moved itself into the namespace (`setns` affects only the calling thread);
//! the netlink socket it opens then belongs to that namespace.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsFd;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::error::{NetworkError, Result};

fn netlink_error(action: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetworkError {
    let action = action.into();
    move |e| NetworkError::Netlink {
        action,
        message: match &e {
            rtnetlink::Error::NetlinkError(m) => m.to_io().to_string(),
            other => other.to_string(),
        },
    }
}

fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -errno)
}

/// Runs `work` with a netlink handle, in the network namespace of `netns_pid` when given (the
/// caller's otherwise).
fn run<T, F, Fut>(netns_pid: Option<u32>, work: F) -> Result<T>
where
    T: Send,
    F: FnOnce(Handle) -> Fut + Send,
    Fut: Future<Output = Result<T>>,
{
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                if let Some(pid) = netns_pid {
                    let path = format!("/proc/{pid}/ns/net");
                    let ns = std::fs::File::open(&path).map_err(NetworkError::io(&path))?;
                    rustix::thread::move_into_link_name_space(
                        ns.as_fd(),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )
                    .map_err(|e| NetworkError::io(&path)(e.into()))?;
                }
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()
                    .map_err(NetworkError::io("tokio runtime"))?;
                runtime.block_on(async move {
                    let (connection, handle, _) =
                        rtnetlink::new_connection().map_err(NetworkError::io("netlink socket"))?;
                    let driver = tokio::spawn(connection);
                    let out = work(handle).await;
                    driver.abort();
                    out
                })
            })
            .join()
            .unwrap_or_else(|_| {
                Err(NetworkError::Netlink {
                    action: "netlink".into(),
                    message: "the netlink thread panicked".into(),
                })
            })
    })
}

async fn link_by_name(handle: &Handle, name: &str) -> Result<Option<LinkMessage>> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(e) if is_errno(&e, libc_enodev()) => Ok(None),
        Err(e) => Err(netlink_error(format!("look up link {name}"))(e)),
    }
}

/// ENODEV, what the kernel answers for a link name it does not have.
const fn libc_enodev() -> i32 {
    19
}
const EEXIST: i32 = 17;

/// Whether the link `name` exists in the caller's namespace.
pub fn link_exists(name: &str) -> Result<bool> {
    link_exists_in(None, name)
}

/// Whether the link `name` exists in the namespace of `netns_pid` (the caller's when `None`).
pub fn link_exists_in(netns_pid: Option<u32>, name: &str) -> Result<bool> {
    run(netns_pid, |handle| async move {
        Ok(link_by_name(&handle, name).await?.is_some())
    })
}

/// The names of the links in the caller's namespace.
pub fn link_names() -> Result<Vec<String>> {
    names_in(None)
}

/// Makes sure the bridge `name` exists in the namespace of `netns_pid` (the caller's when
/// `None`), is up and has `gateway/prefix`. Returns whether it created the bridge (so a
/// failed network create removes only what it made).
pub fn ensure_bridge(
    netns_pid: Option<u32>,
    name: &str,
    gateway: Ipv4Addr,
    prefix: u8,
) -> Result<bool> {
    run(netns_pid, |handle| async move {
        let mut created = false;
        let link = match link_by_name(&handle, name).await? {
            Some(link) => link,
            None => {
                handle
                    .link()
                    .add(LinkBridge::new(name).build())
                    .execute()
                    .await
                    .map_err(netlink_error(format!("create bridge {name}")))?;
                created = true;
                link_by_name(&handle, name)
                    .await?
                    .ok_or_else(|| NetworkError::Netlink {
                        action: format!("create bridge {name}"),
                        message: "the bridge vanished after it was created".into(),
                    })?
            }
        };
        let index = link.header.index;
        let configure = async {
            match handle
                .address()
                .add(index, IpAddr::V4(gateway), prefix)
                .execute()
                .await
            {
                Ok(()) => {}
                Err(e) if is_errno(&e, EEXIST) => {}
                Err(e) => {
                    return Err(netlink_error(format!(
                        "add {gateway}/{prefix} to bridge {name}"
                    ))(e));
                }
            }
            handle
                .link()
                .set(LinkUnspec::new_with_index(index).up().build())
                .execute()
                .await
                .map_err(netlink_error(format!("bring bridge {name} up")))
        };
        match configure.await {
            Ok(()) => Ok(created),
            Err(e) => {
                if created {
                    let _ = handle.link().del(index).execute().await;
                }
                Err(e)
            }
        }
    })
}

/// Removes the link `name` (a bridge, or the host end of a veth pair, which takes its peer
/// along); a link that is not there is no error.
pub fn delete_link(name: &str) -> Result<()> {
    delete_link_in(None, name)
}

/// [`delete_link`] in the namespace of `netns_pid` (the caller's when `None`).
pub fn delete_link_in(netns_pid: Option<u32>, name: &str) -> Result<()> {
    run(netns_pid, |handle| async move {
        let Some(link) = link_by_name(&handle, name).await? else {
            return Ok(());
        };
        match handle.link().del(link.header.index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if is_errno(&e, libc_enodev()) => Ok(()),
            Err(e) => Err(netlink_error(format!("remove link {name}"))(e)),
        }
    })
}

/// One container's interface on one network.
#[derive(Debug, Clone)]
pub struct VethPlan<'a> {
    pub bridge: &'a str,
    /// The host end's name (on the bridge).
    pub host_name: &'a str,
    /// The interface's name inside the container (`eth0`, `eth1`, …).
    pub inner_name: &'a str,
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub mac: [u8; 6],
    /// More addresses (`LinkLocalIPs`), each a /16 as dockerd adds them.
    pub link_local: &'a [Ipv4Addr],
    /// Set as the default route when the container has none yet (its first network).
    pub gateway: Option<Ipv4Addr>,
    /// Host pid of a process in the container's network namespace.
    pub netns_pid: u32,
    /// Host pid of a process in the namespace of the bridge (the per-user network namespace
    /// of a rootless kiln), or `None` for the caller's.
    pub bridge_netns_pid: Option<u32>,
}

/// Creates the veth pair with its container end made directly in the container's namespace,
/// under its final name and MAC (the kernel's `IFLA_NET_NS_PID` on the peer: no move between
/// namespaces, whose RCU wait costs milliseconds per start, and no rename), puts the host end
/// on the bridge, then configures the container end from inside. On failure the pair is
/// removed again.
pub fn attach_veth(plan: &VethPlan<'_>) -> Result<()> {
    let outcome = run(plan.bridge_netns_pid, |handle| async move {
        let bridge =
            link_by_name(&handle, plan.bridge)
                .await?
                .ok_or_else(|| NetworkError::Netlink {
                    action: format!("attach to bridge {}", plan.bridge),
                    message: "the bridge does not exist".into(),
                })?;
        let mut veth = LinkVeth::new(plan.host_name, plan.inner_name).build();
        for attribute in &mut veth.attributes {
            if let LinkAttribute::LinkInfo(infos) = attribute {
                for info in infos {
                    if let LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))) = info {
                        peer.attributes
                            .push(LinkAttribute::NetNsPid(plan.netns_pid));
                        peer.attributes
                            .push(LinkAttribute::Address(plan.mac.to_vec()));
                    }
                }
            }
        }
        handle
            .link()
            .add(veth)
            .execute()
            .await
            .map_err(netlink_error(format!(
                "create veth pair {} into the namespace of pid {}",
                plan.host_name, plan.netns_pid
            )))?;
        let host = link_by_name(&handle, plan.host_name)
            .await?
            .ok_or_else(|| NetworkError::Netlink {
                action: format!("create veth pair {}", plan.host_name),
                message: "the link vanished after it was created".into(),
            })?;
        handle
            .link()
            .set(
                LinkUnspec::new_with_index(host.header.index)
                    .controller(bridge.header.index)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(netlink_error(format!(
                "put {} on bridge {}",
                plan.host_name, plan.bridge
            )))
    })
    .and_then(|()| {
        run(Some(plan.netns_pid), |handle| {
            configure_inside(handle, plan)
        })
    });
    if outcome.is_err() {
        // The host end takes the peer along, wherever it is by now.
        let _ = delete_link_in(plan.bridge_netns_pid, plan.host_name);
    }
    outcome
}

/// Inside the container's namespace: addresses, up, default route.
async fn configure_inside(handle: Handle, plan: &VethPlan<'_>) -> Result<()> {
    let link = link_by_name(&handle, plan.inner_name)
        .await?
        .ok_or_else(|| NetworkError::Netlink {
            action: format!("configure {}", plan.inner_name),
            message: "it is not in the container's namespace".into(),
        })?;
    let index = link.header.index;
    handle
        .address()
        .add(index, IpAddr::V4(plan.address), plan.prefix)
        .execute()
        .await
        .map_err(netlink_error(format!(
            "add {}/{} to {}",
            plan.address, plan.prefix, plan.inner_name
        )))?;
    for extra in plan.link_local {
        handle
            .address()
            .add(index, IpAddr::V4(*extra), 16)
            .execute()
            .await
            .map_err(netlink_error(format!(
                "add {extra}/16 to {}",
                plan.inner_name
            )))?;
    }
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(netlink_error(format!("bring {} up", plan.inner_name)))?;
    if let Some(gateway) = plan.gateway {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .output_interface(index)
            .build();
        match handle.route().add(route).execute().await {
            Ok(()) => {}
            // The container's first network already gave it a default route.
            Err(e) if is_errno(&e, EEXIST) => {}
            Err(e) => {
                return Err(netlink_error(format!("route via {gateway}"))(e));
            }
        }
    }
    Ok(())
}

/// Brings `lo` up in the namespace of `netns_pid` (a new namespace has it down, without
/// 127.0.0.1), so the container's loopback and its DNS address work from the start.
pub fn loopback_up(netns_pid: u32) -> Result<()> {
    run(Some(netns_pid), |handle| async move {
        let lo = link_by_name(&handle, "lo")
            .await?
            .ok_or_else(|| NetworkError::Netlink {
                action: "bring lo up".into(),
                message: "the namespace has no lo".into(),
            })?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(lo.header.index).up().build())
            .execute()
            .await
            .map_err(netlink_error("bring lo up"))
    })
}

/// Removes the interface `inner_name` from the namespace of `netns_pid` (disconnect of a
/// running container); its host end goes with it.
pub fn detach_inside(netns_pid: u32, inner_name: &str) -> Result<()> {
    run(Some(netns_pid), |handle| async move {
        if let Some(link) = link_by_name(&handle, inner_name).await? {
            handle
                .link()
                .del(link.header.index)
                .execute()
                .await
                .map_err(netlink_error(format!("remove {inner_name}")))?;
        }
        Ok(())
    })
}

/// The interface names in the namespace of `netns_pid`, to pick the next free `ethN`.
pub fn names_inside(netns_pid: u32) -> Result<Vec<String>> {
    names_in(Some(netns_pid))
}

/// The link names in the namespace of `netns_pid`, or the caller's.
pub fn names_in(netns_pid: Option<u32>) -> Result<Vec<String>> {
    run(netns_pid, |handle| async move {
        let mut names = Vec::new();
        let mut links = handle.link().get().execute();
        while let Some(link) = links
            .try_next()
            .await
            .map_err(netlink_error("list links"))?
        {
            names.extend(link.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            }));
        }
        Ok(names)
    })
}

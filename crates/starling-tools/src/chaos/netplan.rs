//! Real network isolation for `starling chaos`, the pure part: the names, addresses and
//! `ip` commands of a run's namespaces, and which routes a partition adds and removes.
//!
//! Each node gets its own namespace `stl-<tag>-<id>` whose `eth0` is one end of a veth
//! pair; the other end (`stl<tag>v<i>`) hangs on the run's bridge `stl<tag>b` in the root
//! namespace, so the runner reaches every node. The run takes one /24 of 10.0.0.0/8: node
//! `i` is `.i+1`, the bridge `.254`. Each namespace also holds a sink: a veth pair
//! (`cut0`/`cut1`) with no address behind it. Cutting `from → to` routes `to`'s address
//! into the sink with a permanent neighbour entry, so sends succeed and the packets vanish
//! (a blackhole or unreachable route would fail the send, which the gossip layer treats as
//! a broken transport rather than a silent peer).

use super::schedule::SplitMix64;
use std::net::Ipv4Addr;

/// The sink's end inside each namespace.
const SINK: &str = "cut0";
/// The sink's other end: no address, so whatever reaches it is dropped.
const SINK_PEER: &str = "cut1";
/// The link-layer address of the sink's neighbour entries.
const SINK_LLADDR: &str = "02:00:00:00:00:01";
/// How many candidate /24s are tried before giving up.
const SUBNET_TRIES: usize = 256;

/// Traffic from node `from` to node `to` (indices) is dropped in `from`'s namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cut {
    pub from: usize,
    pub to: usize,
}

/// One setup command, and the command that undoes it if it is not undone with another.
#[derive(Debug, PartialEq, Eq)]
pub struct Step {
    pub args: Vec<String>,
    pub undo: Option<Vec<String>>,
}

/// A run's namespaces: node ids (in order), the tag and the /24 (`10.a.b.0`).
#[derive(Clone, Debug)]
pub struct Plan {
    tag: String,
    subnet: [u8; 2],
    ids: Vec<String>,
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The run's tag: 6 hex digits from `seed` (pid and time).
pub fn tag(seed: u64) -> String {
    format!("{:06x}", SplitMix64::new(seed).next_u64() & 0xff_ffff)
}

impl Plan {
    pub fn new(tag: String, subnet: [u8; 2], ids: Vec<String>) -> Plan {
        Plan { tag, subnet, ids }
    }

    pub fn namespace(&self, i: usize) -> String {
        format!("stl-{}-{}", self.tag, self.ids[i])
    }

    pub fn bridge(&self) -> String {
        format!("stl{}b", self.tag)
    }

    fn veth(&self, i: usize) -> String {
        format!("stl{}v{i}", self.tag)
    }

    /// Node `i`'s address.
    pub fn ip(&self, i: usize) -> Ipv4Addr {
        let [a, b] = self.subnet;
        Ipv4Addr::new(10, a, b, (i + 1) as u8)
    }

    fn bridge_ip(&self) -> Ipv4Addr {
        let [a, b] = self.subnet;
        Ipv4Addr::new(10, a, b, 254)
    }

    /// How many nodes.
    pub fn nodes(&self) -> usize {
        self.ids.len()
    }

    pub fn index(&self, id: &str) -> Option<usize> {
        self.ids.iter().position(|n| n == id)
    }

    /// Every `ip` command that builds the run's network, in order, each with its undo.
    pub fn setup(&self) -> Vec<Step> {
        let br = self.bridge();
        let mut steps = vec![
            Step {
                args: args(&["link", "add", &br, "type", "bridge"]),
                undo: Some(args(&["link", "del", &br])),
            },
            Step {
                args: args(&["link", "set", &br, "up"]),
                undo: None,
            },
            Step {
                args: args(&[
                    "addr",
                    "add",
                    &format!("{}/24", self.bridge_ip()),
                    "dev",
                    &br,
                ]),
                undo: None,
            },
        ];
        for i in 0..self.ids.len() {
            let (ns, veth) = (self.namespace(i), self.veth(i));
            let ip = format!("{}/24", self.ip(i));
            steps.push(Step {
                args: args(&["netns", "add", &ns]),
                undo: Some(args(&["netns", "del", &ns])),
            });
            // Deleting the host end takes the peer with it at once (a namespace's own
            // interfaces go some time after the namespace).
            steps.push(Step {
                args: args(&["link", "add", &veth, "type", "veth", "peer", "name", "eth0"])
                    .into_iter()
                    .chain(args(&["netns", &ns]))
                    .collect(),
                undo: Some(args(&["link", "del", &veth])),
            });
            let plain = [
                args(&["link", "set", &veth, "master", &br]),
                args(&["link", "set", &veth, "up"]),
                args(&["-n", &ns, "addr", "add", &ip, "dev", "eth0"]),
                args(&["-n", &ns, "link", "set", "eth0", "up"]),
                args(&["-n", &ns, "link", "set", "lo", "up"]),
                args(&[
                    "-n", &ns, "link", "add", SINK, "type", "veth", "peer", "name", SINK_PEER,
                ]),
                args(&["-n", &ns, "link", "set", SINK, "up"]),
                args(&["-n", &ns, "link", "set", SINK_PEER, "up"]),
            ];
            steps.extend(plain.into_iter().map(|args| Step { args, undo: None }));
        }
        steps
    }

    /// The commands that make `cut`: a permanent neighbour in the sink, then the route.
    pub fn cut(&self, cut: Cut) -> Vec<Vec<String>> {
        let (ns, to) = (self.namespace(cut.from), self.ip(cut.to).to_string());
        vec![
            args(&["-n", &ns, "neigh", "replace", &to, "lladdr", SINK_LLADDR])
                .into_iter()
                .chain(args(&["dev", SINK, "nud", "permanent"]))
                .collect(),
            args(&["-n", &ns, "route", "add", &format!("{to}/32"), "dev", SINK]),
        ]
    }

    /// The command that heals `cut`: its route goes.
    pub fn heal(&self, cut: Cut) -> Vec<String> {
        let (ns, to) = (self.namespace(cut.from), self.ip(cut.to));
        args(&["-n", &ns, "route", "del", &format!("{to}/32"), "dev", SINK])
    }
}

/// Isolating `isolated` (indices): every node inside drops what it sends to each node
/// outside, and each node outside drops what it sends to each node inside.
pub fn cuts(nodes: usize, isolated: &[usize]) -> Vec<Cut> {
    let mut cuts = Vec::new();
    for &n in isolated {
        for p in (0..nodes).filter(|p| !isolated.contains(p)) {
            cuts.push(Cut { from: n, to: p });
            cuts.push(Cut { from: p, to: n });
        }
    }
    cuts.sort();
    cuts.dedup();
    cuts
}

/// A `10.a.b.0/24` drawn from `seed` that overlaps no destination in `routes` (the
/// output of `ip -4 route show`; `default` is ignored).
pub fn pick_subnet(seed: u64, routes: &str) -> Option<[u8; 2]> {
    let taken: Vec<(u32, u32)> = routes.lines().filter_map(prefix).collect();
    let mut rng = SplitMix64::new(seed);
    (0..SUBNET_TRIES).find_map(|_| {
        let [a, b] = [rng.next_u64() as u8, rng.next_u64() as u8];
        let net = u32::from(Ipv4Addr::new(10, a, b, 0));
        let free = taken.iter().all(|&(p, len)| {
            let mask = u32::MAX.checked_shl(32 - len.min(24)).unwrap_or(0);
            net & mask != p & mask
        });
        free.then_some([a, b])
    })
}

/// A route line's destination as (address, prefix length).
fn prefix(line: &str) -> Option<(u32, u32)> {
    let dest = line.split_whitespace().next()?;
    let (addr, len) = dest.split_once('/').unwrap_or((dest, "32"));
    let addr: Ipv4Addr = addr.parse().ok()?;
    let len: u32 = len.parse().ok().filter(|l| *l <= 32)?;
    Some((u32::from(addr), len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        let ids = ["n1", "n2", "n3"].map(String::from).to_vec();
        Plan::new("a1b2c3".into(), [77, 5], ids)
    }

    #[test]
    fn names_fit_linux_interface_names_and_carry_the_tag() {
        let p = plan();
        assert_eq!(p.namespace(0), "stl-a1b2c3-n1");
        assert_eq!(p.bridge(), "stla1b2c3b");
        assert_eq!(p.veth(2), "stla1b2c3v2");
        assert!(
            Plan::new("ffffff".into(), [0, 0], vec!["x".into(); 100])
                .veth(99)
                .len()
                <= 15
        );
        assert_eq!(tag(42).len(), 6);
        assert_ne!(tag(42), tag(43));
    }

    #[test]
    fn nodes_and_the_bridge_share_the_subnet() {
        let p = plan();
        assert_eq!(p.ip(0), Ipv4Addr::new(10, 77, 5, 1));
        assert_eq!(p.ip(2), Ipv4Addr::new(10, 77, 5, 3));
        assert_eq!(p.bridge_ip(), Ipv4Addr::new(10, 77, 5, 254));
        assert_eq!(p.index("n3"), Some(2));
        assert_eq!(p.index("n9"), None);
    }

    #[test]
    fn setup_is_undone_by_deleting_the_bridge_every_namespace_and_veth() {
        let p = plan();
        let steps = p.setup();
        assert_eq!(steps.len(), 3 + 3 * 10);
        let undo: Vec<String> = steps
            .iter()
            .filter_map(|s| s.undo.as_ref())
            .map(|u| u.join(" "))
            .collect();
        assert_eq!(
            undo,
            [
                "link del stla1b2c3b",
                "netns del stl-a1b2c3-n1",
                "link del stla1b2c3v0",
                "netns del stl-a1b2c3-n2",
                "link del stla1b2c3v1",
                "netns del stl-a1b2c3-n3",
                "link del stla1b2c3v2",
            ]
        );
        let veth = steps
            .iter()
            .find(|s| s.args[..2] == ["link", "add"] && s.args[2] == "stla1b2c3v1")
            .map(|s| s.args.join(" "));
        let veth = veth.as_deref();
        let want = "link add stla1b2c3v1 type veth peer name eth0 netns stl-a1b2c3-n2";
        assert_eq!(veth, Some(want));
    }

    #[test]
    fn isolating_one_node_cuts_both_directions_to_each_other_node() {
        let c = |from, to| Cut { from, to };
        assert_eq!(cuts(3, &[0]), [c(0, 1), c(0, 2), c(1, 0), c(2, 0)].to_vec());
        assert_eq!(
            cuts(4, &[1, 3]),
            [
                c(0, 1),
                c(0, 3),
                c(1, 0),
                c(1, 2),
                c(2, 1),
                c(2, 3),
                c(3, 0),
                c(3, 2)
            ]
            .to_vec()
        );
        assert!(cuts(3, &[]).is_empty());
        assert!(cuts(2, &[0, 1]).is_empty());
    }

    #[test]
    fn a_cut_routes_the_peer_into_the_sink_and_healing_removes_only_that_route() {
        let p = plan();
        let cut = Cut { from: 1, to: 0 };
        let made: Vec<String> = p.cut(cut).iter().map(|a| a.join(" ")).collect();
        assert_eq!(
            made,
            [
                "-n stl-a1b2c3-n2 neigh replace 10.77.5.1 lladdr 02:00:00:00:00:01 dev cut0 nud permanent",
                "-n stl-a1b2c3-n2 route add 10.77.5.1/32 dev cut0",
            ]
        );
        assert_eq!(
            p.heal(cut).join(" "),
            "-n stl-a1b2c3-n2 route del 10.77.5.1/32 dev cut0"
        );
    }

    #[test]
    fn the_subnet_avoids_every_route_in_use() {
        let free = pick_subnet(7, "default via 192.0.2.1 dev eth0\n").expect("a subnet");
        let routes = format!(
            "default via 192.0.2.1 dev eth0\n10.{}.{}.0/24 dev br0 proto kernel\n",
            free[0], free[1]
        );
        let other = pick_subnet(7, &routes).expect("another subnet");
        assert_ne!(other, free);
        assert_eq!(pick_subnet(7, "10.0.0.0/8 dev tun0\n"), None);
        assert_eq!(prefix("192.0.2.7 dev eth0"), Some((0xc000_0207, 32)));
        assert_eq!(prefix("default via 192.0.2.1 dev eth0"), None);
    }
}

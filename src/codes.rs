//! The catalogue of diagnostic codes: number, default severity, title and long explanation.
//!
//! NQ001–NQ039 follow the research catalogue (`shared/research/reliability.md` part a);
//! NQ040 onwards are checks of the language itself; NQ100–NQ119 are findings of `netqos
//! doctor` about the node (NQ100 also from `plan` and `apply`).

use crate::diagnostic::Severity;

macro_rules! codes {
    ($( $variant:ident = $num:literal, $sev:ident, $title:literal; )*) => {
        /// A diagnostic code, `NQ###`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Code { $( $variant, )* }

        impl Code {
            /// Every code, in numeric order.
            pub const ALL: &'static [Code] = &[ $( Code::$variant, )* ];

            /// The number, e.g. 1 for NQ001.
            pub fn number(self) -> u16 {
                match self { $( Code::$variant => $num, )* }
            }

            /// The usual severity; a few checks raise or lower it case by case.
            pub fn severity(self) -> Severity {
                match self { $( Code::$variant => Severity::$sev, )* }
            }

            /// A short title for listings.
            pub fn title(self) -> &'static str {
                match self { $( Code::$variant => $title, )* }
            }

            /// The long explanation shown by `netqos explain`.
            pub fn explanation(self) -> &'static str {
                match self {
                    $( Code::$variant => include_str!(concat!("explain/", stringify!($variant), ".md")), )*
                }
            }
        }
    };
}

codes! {
    NQ001 = 1, Error, "default class missing";
    NQ002 = 2, Error, "default class is an inner class";
    NQ003 = 3, Info, "class id read as hexadecimal";
    NQ004 = 4, Error, "class id out of range or taken";
    NQ005 = 5, Error, "class tree too deep";
    NQ006 = 6, Error, "rate without an unambiguous unit";
    NQ007 = 7, Warning, "size without a byte unit";
    NQ008 = 8, Error, "rate missing or zero";
    NQ009 = 9, Error, "ceil below rate";
    NQ010 = 10, Error, "children reserve more than their parent";
    NQ011 = 11, Warning, "ceil above the parent's ceil";
    NQ013 = 13, Info, "rate needs 64-bit encoding";
    NQ014 = 14, Warning, "derived quantum out of the kernel's range";
    NQ015 = 15, Warning, "quantum smaller than a packet";
    NQ016 = 16, Error, "tbf burst smaller than a packet";
    NQ017 = 17, Warning, "burst too small for the rate";
    NQ018 = 18, Warning, "burst too large to shape";
    NQ019 = 19, Warning, "parent burst smaller than a child's";
    NQ020 = 20, Error, "tbf options inconsistent";
    NQ021 = 21, Warning, "leaf queue too long for the rate";
    NQ022 = 22, Warning, "unmatched protocols land in a starved default";
    NQ023 = 23, Error, "match shadowed by an earlier match";
    NQ024 = 24, Error, "class receives no traffic";
    NQ025 = 25, Error, "inner class is never selected";
    NQ028 = 28, Error, "ingress shaping device conflict";
    NQ029 = 29, Error, "redirect from an ifb device";
    NQ030 = 30, Error, "invalid interface name";
    NQ032 = 32, Error, "control-plane traffic left in a starved class";
    NQ034 = 34, Error, "CNI conflist cannot take the bandwidth plugin as it is";
    NQ035 = 35, Warning, "static CNI bandwidth overrides every pod's annotations";
    NQ036 = 36, Error, "CNI bandwidth values the plugin rejects";
    NQ037 = 37, Error, "output would land in the CNI config directory";
    NQ038 = 38, Error, "pod bandwidth outside what runtimes accept";
    NQ040 = 40, Error, "syntax error";
    NQ041 = 41, Error, "unknown keyword";
    NQ042 = 42, Error, "duplicate class name";
    NQ043 = 43, Error, "undefined variable";
    NQ044 = 44, Warning, "unused variable";
    NQ045 = 45, Warning, "variable given but not used";
    NQ046 = 46, Error, "CIDR with host bits set";
    NQ047 = 47, Error, "port range reversed";
    NQ048 = 48, Error, "empty set";
    NQ049 = 49, Error, "class unreachable through its parent";
    NQ050 = 50, Error, "more than one default";
    NQ051 = 51, Error, "interface shaped twice";
    NQ052 = 52, Error, "missing or unsupported language version";
    NQ053 = 53, Error, "invalid address";
    NQ054 = 54, Error, "invalid port";
    NQ055 = 55, Error, "prio out of range";
    NQ056 = 56, Error, "statement repeated";
    NQ057 = 57, Error, "wrong kind of value";
    NQ058 = 58, Error, "ports with a protocol that has none";
    NQ059 = 59, Error, "match mixes address families";
    NQ060 = 60, Warning, "redundant match";
    NQ061 = 61, Error, "invalid pod selector";
    NQ062 = 62, Error, "pod limit without a direction";
    NQ063 = 63, Error, "invalid variable value from outside";
    NQ064 = 64, Error, "percentage out of range";
    NQ065 = 65, Warning, "pod limit above every link";
    NQ066 = 66, Warning, "runtime burst lets pods run unshaped";
    NQ067 = 67, Info, "the CNI needs no bandwidth patch";
    NQ068 = 68, Error, "allow names an error or no code";
    NQ069 = 69, Warning, "allow without effect";
    NQ080 = 80, Error, "policy is not UTF-8 text";
    NQ081 = 81, Error, "input file too large";
    NQ082 = 82, Error, "input is not a regular file";
    NQ100 = 100, Warning, "root rate above 95 % of the link's speed";
    NQ101 = 101, Info, "CNI flavour found on the node";
    NQ102 = 102, Info, "bandwidth plugin version";
    NQ103 = 103, Warning, "bandwidth plugin did not answer VERSION";
    NQ104 = 104, Error, "CNI chain names a missing plugin binary";
    NQ105 = 105, Warning, "bandwidth plugin release with known problems";
    NQ106 = 106, Info, "Calico shapes pods itself";
    NQ107 = 107, Warning, "Cilium owns the NIC root qdisc";
    NQ108 = 108, Warning, "a single HTB would replace a multiqueue mq root";
    NQ109 = 109, Error, "policy's CNI flavour is not the node's";
    NQ110 = 110, Warning, "no CNI conflist found";
    NQ111 = 111, Info, "link speed and root qdisc";
    NQ112 = 112, Error, "the kernel lacks a feature the policy needs";
    NQ113 = 113, Info, "kernel capability probes not run";
    NQ114 = 114, Info, "kernel features present";
    NQ083 = 83, Info, "prio gives no precedence";
    NQ085 = 85, Error, "pod burst is not a duration or a size";
    NQ086 = 86, Error, "pod burst below one frame";
    NQ087 = 87, Warning, "pod burst without effect on Calico";
    NQ088 = 88, Error, "netqos CNI entry out of place";
    NQ090 = 90, Warning, "overlay packets fall into an address-only match";
    NQ091 = 91, Error, "pod match without the pod network";
    NQ092 = 92, Error, "pod address outside the pod network";
    NQ093 = 93, Error, "outer address and pod field in one match";
    NQ094 = 94, Error, "pod matches on more than one egress interface";
    NQ095 = 95, Error, "invalid overlay";
    NQ096 = 96, Warning, "pod-network address matched on the outer header";
}

impl Code {
    /// `NQ001`.
    #[must_use]
    pub fn as_string(self) -> String {
        format!("NQ{:03}", self.number())
    }

    /// Parses `NQ001`, `nq1`, `1`.
    #[must_use]
    pub fn parse(text: &str) -> Option<Code> {
        let t = text.trim();
        let digits = t
            .strip_prefix("NQ")
            .or_else(|| t.strip_prefix("nq"))
            .or_else(|| t.strip_prefix("Nq"))
            .unwrap_or(t);
        let n: u16 = digits.parse().ok()?;
        Code::ALL.iter().copied().find(|c| c.number() == n)
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NQ{:03}", self.number())
    }
}

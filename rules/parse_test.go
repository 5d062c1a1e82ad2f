package rules

import (
	"errors"
	"strings"
	"testing"
)

var testPorts = [2]string{"ethA", "ethB"}

// wrap puts one rule line at line 6 of a table.
func wrap(tbl, line string) string {
	if tbl == "raw" {
		return "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:user - [0:0]\n# rule follows\n" + line + "\nCOMMIT\n"
	}
	return "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:user - [0:0]\n" + line + "\nCOMMIT\n"
}

func load(t testing.TB, text string, fam Family) (*RuleSet, error) {
	t.Helper()
	var l Loader
	if err := l.Load("t.rules", strings.NewReader(text), fam); err != nil {
		return nil, err
	}
	l.SetIPSets(randomSets) // for -m set in the random rule sets (ipset_test.go)
	return l.Compile(testPorts)
}

func mustLoad(t testing.TB, text string, fam Family) *RuleSet {
	t.Helper()
	rs, err := load(t, text, fam)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	return rs
}

// TestParseGood checks every match and target: the rule loads and saves in
// iptables-save's canonical form.
func TestParseGood(t *testing.T) {
	tests := []struct {
		name, table string
		fam         Family
		in, want    string // want "" means same as in
	}{
		{"accept", "filter", FamilyIPv4, "-A FORWARD -j ACCEPT", ""},
		{"drop proto", "filter", FamilyIPv4, "-A FORWARD -p tcp -j DROP", ""},
		{"neg proto", "filter", FamilyIPv4, "-A FORWARD ! -p udp -j DROP", ""},
		{"proto number", "filter", FamilyIPv4, "-A FORWARD -p 47 -j ACCEPT", "-A FORWARD -p gre -j ACCEPT"},
		{"proto unnamed number", "filter", FamilyIPv4, "-A FORWARD -p 253 -j ACCEPT", ""},
		{"proto all", "filter", FamilyIPv4, "-A FORWARD -p all -j ACCEPT", "-A FORWARD -j ACCEPT"},
		{"cidr masked", "filter", FamilyIPv4, "-A FORWARD -s 10.1.2.3/8 -j ACCEPT", "-A FORWARD -s 10.0.0.0/8 -j ACCEPT"},
		{"host", "filter", FamilyIPv4, "-A FORWARD -s 10.1.2.3 -j ACCEPT", "-A FORWARD -s 10.1.2.3/32 -j ACCEPT"},
		{"dotted mask neg", "filter", FamilyIPv4, "-A FORWARD ! -d 192.168.0.0/255.255.0.0 -j DROP", "-A FORWARD ! -d 192.168.0.0/16 -j DROP"},
		{"long options", "filter", FamilyIPv4, "-A FORWARD --source 1.2.3.4 --destination 5.6.7.0/24 --protocol tcp --destination-port 80 --jump ACCEPT",
			"-A FORWARD -s 1.2.3.4/32 -d 5.6.7.0/24 -p tcp -m tcp --dport 80 -j ACCEPT"},
		{"v6 addresses", "filter", FamilyIPv6, "-A FORWARD -s 2001:db8::1 ! -d 2001:db8:1::/48 -j ACCEPT", "-A FORWARD -s 2001:db8::1/128 ! -d 2001:db8:1::/48 -j ACCEPT"},
		{"dport implicit tcp", "filter", FamilyIPv4, "-A FORWARD -p tcp --dport 22 -j ACCEPT", "-A FORWARD -p tcp -m tcp --dport 22 -j ACCEPT"},
		{"neg sport range", "filter", FamilyIPv4, "-A FORWARD -p tcp -m tcp ! --sport 1024:65535 -j DROP", ""},
		{"open low range", "filter", FamilyIPv4, "-A FORWARD -p udp --dport :1023 -j ACCEPT", "-A FORWARD -p udp -m udp --dport 0:1023 -j ACCEPT"},
		{"open high range", "filter", FamilyIPv4, "-A FORWARD -p udp -m udp --source-port 5000: -j ACCEPT", "-A FORWARD -p udp -m udp --sport 5000:65535 -j ACCEPT"},
		{"multiport dports", "filter", FamilyIPv4, "-A FORWARD -p tcp -m multiport --dports 80,443,8000:8080 -j ACCEPT", ""},
		{"multiport neg sports", "filter", FamilyIPv4, "-A FORWARD -p udp -m multiport ! --sports 53,123 -j ACCEPT", ""},
		{"multiport ports", "filter", FamilyIPv4, "-A FORWARD -p tcp -m multiport --ports 1,2 -j ACCEPT", ""},
		{"multiport 15", "filter", FamilyIPv4, "-A FORWARD -p tcp -m multiport --dports 1,2,3,4,5,6,7,8,9,10,11,12,13:14 -j ACCEPT", ""},
		{"syn", "filter", FamilyIPv4, "-A FORWARD -p tcp --syn -j ACCEPT", "-A FORWARD -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT"},
		{"not syn", "filter", FamilyIPv4, "-A FORWARD -p tcp ! --syn -m conntrack --ctstate NEW -j DROP", "-A FORWARD -p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -m conntrack --ctstate NEW -j DROP"},
		{"tcp-flags ALL NONE", "filter", FamilyIPv4, "-A FORWARD -p tcp --tcp-flags ALL NONE -j DROP", "-A FORWARD -p tcp -m tcp --tcp-flags FIN,SYN,RST,PSH,ACK,URG NONE -j DROP"},
		{"tcp-flags list", "filter", FamilyIPv4, "-A FORWARD -p tcp --tcp-flags SYN,ACK,FIN,RST,URG,PSH SYN,FIN -j DROP", "-A FORWARD -p tcp -m tcp --tcp-flags FIN,SYN,RST,PSH,ACK,URG FIN,SYN -j DROP"},
		{"icmp name", "filter", FamilyIPv4, "-A FORWARD -p icmp --icmp-type echo-request -j ACCEPT", "-A FORWARD -p icmp -m icmp --icmp-type 8 -j ACCEPT"},
		{"icmp code name", "filter", FamilyIPv4, "-A FORWARD -p icmp -m icmp --icmp-type port-unreachable -j ACCEPT", "-A FORWARD -p icmp -m icmp --icmp-type 3/3 -j ACCEPT"},
		{"icmp frag needed", "filter", FamilyIPv4, "-A FORWARD -p icmp --icmp-type fragmentation-needed -j ACCEPT", "-A FORWARD -p icmp -m icmp --icmp-type 3/4 -j ACCEPT"},
		{"icmp time-exceeded", "filter", FamilyIPv4, "-A FORWARD -p icmp --icmp-type time-exceeded -j ACCEPT", "-A FORWARD -p icmp -m icmp --icmp-type 11 -j ACCEPT"},
		{"icmp neg numeric", "filter", FamilyIPv4, "-A FORWARD -p icmp -m icmp ! --icmp-type 3/4 -j DROP", ""},
		{"icmp any", "filter", FamilyIPv4, "-A FORWARD -p icmp -m icmp --icmp-type any -j ACCEPT", ""},
		{"icmp echo-reply", "filter", FamilyIPv4, "-A FORWARD -p icmp --icmp-type echo-reply -j ACCEPT", "-A FORWARD -p icmp -m icmp --icmp-type 0 -j ACCEPT"},
		{"icmpv6 name", "filter", FamilyIPv6, "-A FORWARD -p ipv6-icmp -m icmp6 --icmpv6-type neighbour-solicitation -j ACCEPT", "-A FORWARD -p ipv6-icmp -m icmp6 --icmpv6-type 135 -j ACCEPT"},
		{"icmpv6 alias", "filter", FamilyIPv6, "-A FORWARD -p icmpv6 --icmpv6-type packet-too-big -j ACCEPT", "-A FORWARD -p ipv6-icmp -m icmp6 --icmpv6-type 2 -j ACCEPT"},
		{"icmpv6 code", "filter", FamilyIPv6, "-A FORWARD -p icmpv6 --icmpv6-type port-unreachable -j ACCEPT", "-A FORWARD -p ipv6-icmp -m icmp6 --icmpv6-type 1/4 -j ACCEPT"},
		{"state", "filter", FamilyIPv4, "-A FORWARD -m state --state NEW,ESTABLISHED -j ACCEPT", ""},
		{"ctstate order", "filter", FamilyIPv4, "-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT", "-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"},
		{"ctstate neg", "filter", FamilyIPv4, "-A FORWARD -m conntrack ! --ctstate INVALID,UNTRACKED -j ACCEPT", ""},
		{"physdev", "filter", FamilyIPv4, "-A FORWARD -m physdev --physdev-in ethA --physdev-out ethB --physdev-is-bridged -j ACCEPT", ""},
		{"physdev neg is-in", "filter", FamilyIPv4, "-A FORWARD -m physdev ! --physdev-is-in -j DROP", ""},
		{"iface", "filter", FamilyIPv4, "-A FORWARD -i ethA -o eth+ -j ACCEPT", ""},
		{"iface neg", "filter", FamilyIPv4, "-A FORWARD ! -i ethA -j DROP", ""},
		{"comment escaped", "filter", FamilyIPv4, `-A FORWARD -m comment --comment "a \"quoted\" comment" -j ACCEPT`, ""},
		{"comment single quotes", "filter", FamilyIPv4, `-A FORWARD -m comment --comment 'with  spaces' -j ACCEPT`, `-A FORWARD -m comment --comment "with  spaces" -j ACCEPT`},
		{"counters prefix", "filter", FamilyIPv4, "[5:300] -A FORWARD -j ACCEPT", "-A FORWARD -j ACCEPT"},
		{"counters option", "filter", FamilyIPv4, "-A FORWARD -j ACCEPT -c 5 300", "-A FORWARD -j ACCEPT"},
		{"jump", "filter", FamilyIPv4, "-A FORWARD -p tcp -j user", ""},
		{"goto", "filter", FamilyIPv4, "-A FORWARD -g user", ""},
		{"return", "filter", FamilyIPv4, "-A user -s 10.0.0.0/8 -j RETURN", ""},
		{"no target", "filter", FamilyIPv4, "-A FORWARD -s 1.2.3.4/32", ""},
		{"fragment", "filter", FamilyIPv4, "-A FORWARD -f -j DROP", ""},
		{"not fragment", "filter", FamilyIPv4, "-A FORWARD ! -f -j ACCEPT", ""},
		{"notrack", "raw", FamilyIPv4, "-A PREROUTING -j NOTRACK", ""},
		{"ct notrack", "raw", FamilyIPv4, "-A PREROUTING -p udp -m udp --dport 53 -j CT --notrack", ""},
		{"ct helper ftp", "raw", FamilyIPv4, "-A PREROUTING -p tcp --dport 21 -j CT --helper ftp", "-A PREROUTING -p tcp -m tcp --dport 21 -j CT --helper ftp"},
		{"ct helper irc", "raw", FamilyIPv4, "-A PREROUTING -p tcp -m tcp --dport 6667 -j CT --helper irc", ""},
		{"ct helper tftp", "raw", FamilyIPv6, "-A PREROUTING -p udp -m udp --dport 69 -j CT --helper tftp", ""},
		{"ct helper amanda", "raw", FamilyIPv4, "-A PREROUTING -p udp -m udp --dport 10080 -j CT --helper amanda", ""},
		{"raw physdev-in", "raw", FamilyIPv4, "-A PREROUTING -m physdev --physdev-in ethB -j DROP", ""},
		{"both families", "filter", FamilyBoth, "-A FORWARD -p tcp -m tcp --dport 22 -j ACCEPT", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rs, err := load(t, wrap(tc.table, tc.in), tc.fam)
			if err != nil {
				t.Fatalf("load %q: %v", tc.in, err)
			}
			want := tc.want
			if want == "" {
				want = tc.in
			}
			wantN := 1
			switch {
			case strings.HasPrefix(tc.in, "-A user"):
				wantN = 0 // user chain not reachable from FORWARD: not compiled
			case tc.fam == FamilyBoth:
				wantN = 2 // one per family
			}
			if rs.NumRules() != wantN {
				t.Errorf("got %d compiled rules, want %d", rs.NumRules(), wantN)
			}
			var b strings.Builder
			if err := rs.Save(&b, tc.fam); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(b.String(), "\n"+want+"\n") {
				t.Errorf("saved:\n%s\nwant line %q", b.String(), want)
			}
		})
	}
}

// TestParseErrors checks each kind of error: exact "file:line: message" and
// the sentinel.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		name  string
		fam   Family
		input string
		want  string
		is    error
	}{
		{"unknown option", FamilyIPv4, wrap("filter", "-A FORWARD --foo -j ACCEPT"), `t.rules:6: unknown match "--foo"`, ErrUnknown},
		{"unsupported module", FamilyIPv4, wrap("filter", "-A FORWARD -m quota --quota 2 -j DROP"), `t.rules:6: match module "quota" is not supported`, ErrUnsupported},
		{"unknown module", FamilyIPv4, wrap("filter", "-A FORWARD -m bogus -j ACCEPT"), `t.rules:6: unknown match module "bogus"`, ErrUnknown},
		{"unsupported target", FamilyIPv4, wrap("filter", "-A FORWARD -j NFLOG --nflog-group 1"), `t.rules:6: target "NFLOG" is not supported`, ErrUnsupported},
		{"unknown target", FamilyIPv4, wrap("filter", "-A FORWARD -j NOPE"), `t.rules:6: unknown target or chain "NOPE"`, ErrUnknown},
		{"jump builtin", FamilyIPv4, wrap("filter", "-A user -j FORWARD"), `t.rules:6: cannot jump to built-in chain "FORWARD"`, ErrSyntax},
		{"unknown chain", FamilyIPv4, wrap("filter", "-A NOCHAIN -j ACCEPT"), `t.rules:6: unknown chain "NOCHAIN"`, ErrUnknown},
		{"unknown proto", FamilyIPv4, wrap("filter", "-A FORWARD -p tcpx -j ACCEPT"), `t.rules:6: unknown protocol "tcpx"`, ErrUnknown},
		{"neg proto all", FamilyIPv4, wrap("filter", "-A FORWARD ! -p all -j ACCEPT"), `t.rules:6: protocol "all" cannot be negated: the rule would never match`, ErrSyntax},
		{"bad address", FamilyIPv4, wrap("filter", "-A FORWARD -s 10.0.0.300 -j ACCEPT"), `t.rules:6: bad address "10.0.0.300" (host names are not resolved)`, ErrSyntax},
		{"host name", FamilyIPv4, wrap("filter", "-A FORWARD -d example.com -j ACCEPT"), `t.rules:6: bad address "example.com" (host names are not resolved)`, ErrSyntax},
		{"bad prefix", FamilyIPv4, wrap("filter", "-A FORWARD -s 10.0.0.0/33 -j ACCEPT"), `t.rules:6: bad prefix length in "10.0.0.0/33"`, ErrSyntax},
		{"noncontiguous mask", FamilyIPv4, wrap("filter", "-A FORWARD -s 10.0.0.0/255.0.255.0 -j ACCEPT"), `t.rules:6: non-contiguous netmask in "10.0.0.0/255.0.255.0"`, ErrSyntax},
		{"v6 address in v4", FamilyIPv4, wrap("filter", "-A FORWARD -s 2001:db8::1 -j ACCEPT"), `t.rules:6: address "2001:db8::1" is not ipv4`, ErrSyntax},
		{"v4 address in v6", FamilyIPv6, wrap("filter", "-A FORWARD -d 10.0.0.1 -j ACCEPT"), `t.rules:6: address "10.0.0.1" is not ipv6`, ErrSyntax},
		{"mixed families", FamilyBoth, wrap("filter", "-A FORWARD -s 10.0.0.1 -d 2001:db8::1 -j ACCEPT"), `t.rules:6: rule mixes IPv4 and IPv6 addresses: "2001:db8::1"`, ErrSyntax},
		{"address list", FamilyIPv4, wrap("filter", "-A FORWARD -s 1.2.3.4,5.6.7.8 -j ACCEPT"), `t.rules:6: address lists are not supported, write one rule per address: "1.2.3.4,5.6.7.8"`, ErrUnsupported},
		{"dport without proto", FamilyIPv4, wrap("filter", "-A FORWARD --dport 22 -j ACCEPT"), `t.rules:6: option "--dport" needs -p tcp or -p udp`, ErrSyntax},
		{"dport neg proto", FamilyIPv4, wrap("filter", "-A FORWARD ! -p tcp --dport 22 -j ACCEPT"), `t.rules:6: option "--dport" needs -p tcp or -p udp`, ErrSyntax},
		{"port too big", FamilyIPv4, wrap("filter", "-A FORWARD -p tcp --dport 70000 -j ACCEPT"), `t.rules:6: bad port or range "70000"`, ErrSyntax},
		{"port name", FamilyIPv4, wrap("filter", "-A FORWARD -p tcp --dport ssh -j ACCEPT"), `t.rules:6: bad port or range "ssh"`, ErrSyntax},
		{"range reversed", FamilyIPv4, wrap("filter", "-A FORWARD -p tcp --dport 30:20 -j ACCEPT"), `t.rules:6: bad port or range "30:20"`, ErrSyntax},
		{"old negation", FamilyIPv4, wrap("filter", "-A FORWARD -p tcp --dport ! 22 -j ACCEPT"), `t.rules:6: bad port or range "!"`, ErrSyntax},
		{"missing value", FamilyIPv4, wrap("filter", "-A FORWARD -p tcp --dport"), `t.rules:6: option "--dport" needs a value`, ErrSyntax},
		{"multiport too long", FamilyIPv4, wrap("filter", "-A FORWARD -p tcp -m multiport --dports 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15:16 -j ACCEPT"), `t.rules:6: bad multiport list "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15:16" (at most 15 ports, a range counts as two)`, ErrSyntax},
		{"multiport without m", FamilyIPv4, wrap("filter", "-A FORWARD -p tcp --dports 80 -j ACCEPT"), `t.rules:6: option "--dports" needs -m multiport`, ErrSyntax},
		{"multiport icmp", FamilyIPv4, wrap("filter", "-A FORWARD -p icmp -m multiport --dports 1 -j ACCEPT"), `t.rules:6: -m multiport needs -p tcp, udp, udplite, sctp or dccp`, ErrSyntax},
		{"syn on udp", FamilyIPv4, wrap("filter", "-A FORWARD -p udp --syn -j ACCEPT"), `t.rules:6: option "--syn" needs -p tcp`, ErrSyntax},
		{"bad tcp flag", FamilyIPv4, wrap("filter", "-A FORWARD -p tcp --tcp-flags SYN,FOO SYN -j ACCEPT"), `t.rules:6: bad TCP flag list "SYN,FOO"`, ErrSyntax},
		{"tcp-flags one arg", FamilyIPv4, wrap("filter", "-A FORWARD -p tcp --tcp-flags SYN"), `t.rules:6: option "--tcp-flags" needs a value`, ErrSyntax},
		{"bad icmp type", FamilyIPv4, wrap("filter", "-A FORWARD -p icmp --icmp-type bogus -j ACCEPT"), `t.rules:6: unknown ICMP type "bogus"`, ErrUnknown},
		{"icmp 255", FamilyIPv4, wrap("filter", "-A FORWARD -p icmp --icmp-type 255 -j ACCEPT"), `t.rules:6: unknown ICMP type "255"`, ErrUnknown},
		{"v6 name in v4", FamilyIPv4, wrap("filter", "-A FORWARD -p icmp --icmp-type neighbour-solicitation -j ACCEPT"), `t.rules:6: unknown ICMP type "neighbour-solicitation"`, ErrUnknown},
		{"icmp-type in v6", FamilyIPv6, wrap("filter", "-A FORWARD -p icmp -m icmp --icmp-type 8 -j ACCEPT"), `t.rules:6: --icmp-type is IPv4 only (use -p ipv6-icmp --icmpv6-type)`, ErrSyntax},
		{"icmpv6-type in v4", FamilyIPv4, wrap("filter", "-A FORWARD -p ipv6-icmp --icmpv6-type 128 -j ACCEPT"), `t.rules:6: --icmpv6-type in an IPv4 rule file`, ErrSyntax},
		{"icmp-type without proto", FamilyIPv4, wrap("filter", "-A FORWARD --icmp-type 8 -j ACCEPT"), `t.rules:6: option "--icmp-type" needs -p icmp`, ErrSyntax},
		{"unknown state", FamilyIPv4, wrap("filter", "-A FORWARD -m conntrack --ctstate NEW,BOGUS -j ACCEPT"), `t.rules:6: unknown state "BOGUS"`, ErrUnknown},
		{"nat state", FamilyIPv4, wrap("filter", "-A FORWARD -m conntrack --ctstate DNAT -j ACCEPT"), `t.rules:6: state "DNAT" is not supported (statewire does no NAT)`, ErrUnsupported},
		{"ctstate without m", FamilyIPv4, wrap("filter", "-A FORWARD --ctstate NEW -j ACCEPT"), `t.rules:6: option "--ctstate" needs -m conntrack`, ErrSyntax},
		{"ctstate with m state", FamilyIPv4, wrap("filter", "-A FORWARD -m state --ctstate NEW -j ACCEPT"), `t.rules:6: option "--ctstate" needs -m conntrack`, ErrSyntax},
		{"conntrack ctdir inverted", FamilyIPv4, wrap("filter", "-A FORWARD -m conntrack ! --ctdir ORIGINAL -j ACCEPT"), `t.rules:6: conntrack: option "--ctdir" cannot be inverted`, ErrSyntax},
		{"physdev without m", FamilyIPv4, wrap("filter", "-A FORWARD --physdev-in ethA -j ACCEPT"), `t.rules:6: option "--physdev-in" needs -m physdev`, ErrSyntax},
		{"physdev missing value", FamilyIPv4, wrap("filter", "-A FORWARD -m physdev --physdev-in"), `t.rules:6: option "--physdev-in" needs a value`, ErrSyntax},
		{"bad iface", FamilyIPv4, wrap("filter", "-A FORWARD -i eth/0 -j ACCEPT"), `t.rules:6: bad interface name "eth/0"`, ErrSyntax},
		{"long iface", FamilyIPv4, wrap("filter", "-A FORWARD -i averyveryverylongname0 -j ACCEPT"), `t.rules:6: bad interface name "averyveryverylongname0"`, ErrSyntax},
		{"neg target", FamilyIPv4, wrap("filter", "-A FORWARD ! -j ACCEPT"), `t.rules:6: "-j" cannot be negated`, ErrSyntax},
		{"double neg", FamilyIPv4, wrap("filter", "-A FORWARD ! ! -s 1.2.3.4 -j ACCEPT"), `t.rules:6: double negation "!"`, ErrSyntax},
		{"trailing neg", FamilyIPv4, wrap("filter", "-A FORWARD -s 1.2.3.4 !"), `t.rules:6: "!" at end of rule`, ErrSyntax},
		{"duplicate option", FamilyIPv4, wrap("filter", "-A FORWARD -s 1.2.3.4 -s 5.6.7.8 -j ACCEPT"), `t.rules:6: option "-s" given twice`, ErrSyntax},
		{"two targets", FamilyIPv4, wrap("filter", "-A FORWARD -j ACCEPT -j DROP"), `t.rules:6: second target "-j"`, ErrSyntax},
		{"unterminated quote", FamilyIPv4, wrap("filter", `-A FORWARD -m comment --comment "oops -j ACCEPT`), `t.rules:6: unterminated quote "\""`, ErrSyntax},
		{"stray word", FamilyIPv4, wrap("filter", "-A FORWARD -j ACCEPT extra"), `t.rules:6: unexpected word "extra"`, ErrSyntax},
		{"comment too long", FamilyIPv4, wrap("filter", "-A FORWARD -m comment --comment "+strings.Repeat("x", 256)+" -j ACCEPT"), `t.rules:6: comment longer than 255 bytes`, ErrSyntax},
		{"notrack in filter", FamilyIPv4, wrap("filter", "-A FORWARD -j NOTRACK"), `t.rules:6: target NOTRACK is only valid in the raw table`, ErrSyntax},
		{"ct zone", FamilyIPv4, wrap("raw", "-A PREROUTING -j CT --zone 1"), `t.rules:6: CT option "--zone" is not supported (only --notrack and --helper)`, ErrUnsupported},
		{"ct bare", FamilyIPv4, wrap("raw", "-A PREROUTING -j CT"), `t.rules:6: -j CT needs --notrack or --helper NAME (other CT options are not supported)`, ErrUnsupported},
		{"ct both", FamilyIPv4, wrap("raw", "-A PREROUTING -j CT --notrack --helper ftp"), `t.rules:6: -j CT takes one of --notrack or --helper, not "--helper" as well`, ErrSyntax},
		{"ct unknown helper", FamilyIPv4, wrap("raw", "-A PREROUTING -p udp -j CT --helper sip"), `t.rules:6: unknown or unsupported helper "sip" (ftp, irc, tftp, amanda)`, ErrUnsupported},
		{"raw out iface", FamilyIPv4, wrap("raw", "-A PREROUTING -o ethB -j NOTRACK"), `t.rules:6: option "-o" is not available in the raw table (PREROUTING has no output port)`, ErrSyntax},
		{"notrack option without CT", FamilyIPv4, wrap("filter", "-A FORWARD -j ACCEPT --notrack"), `t.rules:6: option "--notrack" needs -j CT`, ErrSyntax},
		{"fragment in v6", FamilyIPv6, wrap("filter", "-A FORWARD -f -j DROP"), `t.rules:6: option "-f" is IPv4 only (ip6tables has -m frag, which statewire does not support)`, ErrUnsupported},
		{"insert command", FamilyIPv4, wrap("filter", "-I FORWARD 1 -j ACCEPT"), `t.rules:6: unknown command "-I"`, ErrUnknown},
		{"counters alone", FamilyIPv4, wrap("filter", "[1:2]"), `t.rules:6: counters without a rule`, ErrSyntax},
		{"bad counters", FamilyIPv4, wrap("filter", "[1:x] -A FORWARD -j ACCEPT"), `t.rules:6: bad counters "[1:x]"`, ErrSyntax},
		{"rule outside table", FamilyIPv4, "# c\n-A FORWARD -j ACCEPT\n", `t.rules:2: "-A" outside a table (missing *filter or *raw)`, ErrSyntax},
		{"missing commit", FamilyIPv4, "\n*filter\n:FORWARD DROP [0:0]\n-A FORWARD -j ACCEPT\n", `t.rules:2: table "filter" has no COMMIT`, ErrSyntax},
		{"nat rules", FamilyIPv4, "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j ACCEPT\nCOMMIT\n", `t.rules:3: rules in table "nat" are not supported (only filter and raw)`, ErrUnsupported},
		{"unknown table", FamilyIPv4, "*bogus\nCOMMIT\n", `t.rules:1: unknown table "bogus"`, ErrUnknown},
		{"table twice", FamilyIPv4, "*filter\nCOMMIT\n*filter\nCOMMIT\n", `t.rules:3: table "filter" given twice`, ErrSyntax},
		{"table inside table", FamilyIPv4, "*filter\n*raw\nCOMMIT\n", `t.rules:2: table "raw" starts before COMMIT of the previous table`, ErrSyntax},
		{"bad policy", FamilyIPv4, "*filter\n:FORWARD REJECT [0:0]\nCOMMIT\n", `t.rules:2: built-in chain "FORWARD" needs policy ACCEPT or DROP, not "REJECT"`, ErrSyntax},
		{"user chain policy", FamilyIPv4, "*filter\n:mine ACCEPT [0:0]\nCOMMIT\n", `t.rules:2: user chain "mine" cannot have policy "ACCEPT"`, ErrSyntax},
		{"chain twice", FamilyIPv4, "*filter\n:mine - [0:0]\n-N mine\nCOMMIT\n", `t.rules:3: chain "mine" declared twice`, ErrSyntax},
		{"bad chain decl", FamilyIPv4, "*filter\n:mine\nCOMMIT\n", `t.rules:2: bad chain declaration ":mine"`, ErrSyntax},
		{"chain outside", FamilyIPv4, ":mine - [0:0]\n", `t.rules:1: chain ":mine - [0:0]" declared outside a table`, ErrSyntax},
		{"commit outside", FamilyIPv4, "COMMIT\n", `t.rules:1: COMMIT outside a table`, ErrSyntax},
		{"loop", FamilyIPv4, "*filter\n:a - [0:0]\n:b - [0:0]\n-A a -j b\n-A b -j a\nCOMMIT\n", `t.rules:5: jump to "a" makes a loop or nests deeper than 32 chains`, ErrChainLoop},
		{"self loop", FamilyIPv4, "*filter\n:a - [0:0]\n-A a -g a\nCOMMIT\n", `t.rules:3: jump to "a" makes a loop or nests deeper than 32 chains`, ErrChainLoop},
		{"bad policy command", FamilyIPv4, "*filter\n-P user DROP\nCOMMIT\n", `t.rules:2: unknown built-in chain "user"`, ErrUnknown},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var l Loader
			err := l.Load("t.rules", strings.NewReader(tc.input), tc.fam)
			if err == nil {
				t.Fatalf("got no error, want %q", tc.want)
			}
			if err.Error() != tc.want {
				t.Errorf("got error %q, want %q", err.Error(), tc.want)
			}
			if !errors.Is(err, tc.is) {
				t.Errorf("got error %v, want it to wrap %v", err, tc.is)
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Errorf("got %T, want *ParseError", err)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"unknown physdev", "-A FORWARD -m physdev --physdev-in eth9 -j ACCEPT", `t.rules:6: interface "eth9" is not a bridge port (ports: "ethA", "ethB")`},
		{"unknown -o", "-A FORWARD -o eth9 -j ACCEPT", `t.rules:6: interface "eth9" is not a bridge port (ports: "ethA", "ethB")`},
		{"wildcard matching nothing", "-A user -i wlan+ -j ACCEPT\n-A FORWARD -j user", `t.rules:6: interface "wlan+" is not a bridge port (ports: "ethA", "ethB")`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(t, wrap("filter", tc.in), FamilyIPv4)
			if err == nil {
				t.Fatalf("got no error, want %q", tc.want)
			}
			if err.Error() != tc.want || !errors.Is(err, ErrUnknownPort) {
				t.Errorf("got %q, want %q wrapping ErrUnknownPort", err, tc.want)
			}
		})
	}
	// INPUT sees no traffic on an address-less bridge: its names are not
	// resolved, so a full iptables-save dump with "-i lo" still loads.
	if _, err := load(t, wrap("filter", "-A INPUT -i lo -j ACCEPT"), FamilyIPv4); err != nil {
		t.Errorf("INPUT rule with -i lo: got %v, want no error", err)
	}
}

func TestLoaderFamilies(t *testing.T) {
	var l Loader
	if err := l.Load("a", strings.NewReader(""), FamilyBoth); err != nil {
		t.Fatal(err)
	}
	err := l.Load("b", strings.NewReader(""), FamilyIPv6)
	if !errors.Is(err, ErrFamily) {
		t.Errorf("second load for ipv6: got %v, want ErrFamily", err)
	}
	if err := l.Load("c", strings.NewReader(""), 0); err == nil {
		t.Errorf("family 0: got no error")
	}
}

func TestParseForms(t *testing.T) {
	// -N and -P commands, nat/mangle tables without rules, comments and blank
	// lines, counters on chain lines.
	in := `# header

*nat
:PREROUTING ACCEPT [12:34]
:POSTROUTING ACCEPT [0:0]
COMMIT
*filter
-N mine
-P FORWARD DROP
  # indented comment
-A mine -j ACCEPT
-A FORWARD -j mine
COMMIT
`
	rs := mustLoad(t, in, FamilyIPv4)
	var b strings.Builder
	if err := rs.Save(&b, FamilyIPv4); err != nil {
		t.Fatal(err)
	}
	want := "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:mine - [0:0]\n-A FORWARD -j mine\n-A mine -j ACCEPT\nCOMMIT\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

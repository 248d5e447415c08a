// Package dns reads DNS answers and keeps what they say: which names DNS
// gave each address (reverse DNS), in a bounded cache. It knows nothing of
// the kernel: the tracer reads the answers the BPF programs copy and hands
// their payloads to a Cache.
package dns

import (
	"errors"
	"net/netip"
	"slices"
	"strings"

	"golang.org/x/net/dns/dnsmessage"
)

// maxNamesPerAddr bounds the names a Cache keeps for one address.
const maxNamesPerAddr = 32

// Answer is what one DNS answer says: each address, the names it answers
// for (the owner of the A/AAAA record and every question name whose CNAME
// chain leads to it), sorted, lower case, without the final dot.
type Answer map[netip.Addr][]string

// errNotAnswer says a message is a query, an error answer, or an answer
// without any A or AAAA record: nothing to learn, and nothing wrong.
var errNotAnswer = errors.New("not a successful answer")

// parseAnswer reads a DNS response (a UDP payload). It never panics on any
// input; errors say why nothing was learnt (errNotAnswer, or why the
// message cannot be read).
func parseAnswer(b []byte) (Answer, error) {
	var p dnsmessage.Parser
	h, err := p.Start(b)
	if err != nil {
		return nil, err
	}
	if !h.Response || h.RCode != dnsmessage.RCodeSuccess {
		return nil, errNotAnswer
	}
	qs, err := p.AllQuestions()
	if err != nil {
		return nil, err
	}
	cname := map[string]string{}
	owners := map[netip.Addr][]string{}
	for {
		rh, err := p.AnswerHeader()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			break
		}
		if err != nil {
			return nil, err
		}
		owner := name(rh.Name)
		switch rh.Type {
		case dnsmessage.TypeA:
			r, err := p.AResource()
			if err != nil {
				return nil, err
			}
			a := netip.AddrFrom4(r.A)
			owners[a] = append(owners[a], owner)
		case dnsmessage.TypeAAAA:
			r, err := p.AAAAResource()
			if err != nil {
				return nil, err
			}
			a := netip.AddrFrom16(r.AAAA).Unmap()
			owners[a] = append(owners[a], owner)
		case dnsmessage.TypeCNAME:
			r, err := p.CNAMEResource()
			if err != nil {
				return nil, err
			}
			cname[owner] = name(r.CNAME)
		default:
			if err := p.SkipAnswer(); err != nil {
				return nil, err
			}
		}
	}
	if len(owners) == 0 {
		return nil, errNotAnswer
	}
	ans := Answer{}
	for a, os := range owners {
		names := slices.Clone(os)
		for _, q := range qs {
			n := name(q.Name)
			for hop := 0; hop < 8 && n != ""; hop++ { // CNAME chains, bounded
				if slices.Contains(os, n) {
					names = append(names, name(q.Name))
					break
				}
				n = cname[n]
			}
		}
		slices.Sort(names)
		ans[a] = slices.Compact(names)
	}
	return ans, nil
}

func name(n dnsmessage.Name) string {
	return strings.ToLower(strings.TrimSuffix(n.String(), "."))
}

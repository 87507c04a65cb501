// Package failover decides which site the front Services send traffic to.
//
// Decide is a pure function: the reconciler gathers what the cluster holds
// (readiness of each site, since when, whether the primary is fenced, where
// traffic goes now and since when) into an Input, passes the current time in,
// and acts on the Decision. Nothing here reads a clock or talks to an API
// server, so every rule below is a table test.
//
// # Inputs and defaults
//
// Zero values mean the API defaults: Standby "" is None, Trigger "" is
// Automatic, RequestedSite "" is Primary, UnavailableAfter <= 0 is 60s. A
// Current other than Primary or Standby counts as "no site serves". The
// gatherer must set PrimaryReadySince whenever PrimaryReady is true: a zero
// PrimaryReadySince counts as "Ready for no time yet", which keeps traffic on
// the standby in Automatic mode. A zero SwitchedAt counts as "long ago".
// Timestamps later than Now count as "just now".
//
// # Rules
//
// What the rules want:
//
//   - Automatic trigger: the standby is wanted when the primary is fenced (at
//     once), when a critical service of the primary has had no ready replica
//     for at least UnavailableAfter, or while RequestedSite is Standby (a
//     forced switch). Otherwise the primary is wanted. When several hold, the
//     reason is, in order, PrimaryFenced, ManualSwitch, PrimaryUnavailable.
//   - Manual trigger: RequestedSite is wanted, and nothing else moves traffic.
//
// How the decision follows the want:
//
//   - Standby None: traffic goes to the primary unless it is fenced; a fenced
//     primary means no site serves (Serving false, PrimaryFenced). The
//     standby never runs. When the rules would want a standby (the primary
//     down for UnavailableAfter, or activeSite Standby), the primary keeps
//     serving with reason NoStandby, so the condition says a failover was
//     wanted and could not happen.
//   - Warm: RunStandby is always true. Cold: RunStandby is true only while
//     the standby is wanted or serves, so Cold creates the standby when a
//     failover starts and drops it after failback. The reconciler must write
//     the front before it scales the standby down.
//   - Moving to the standby needs StandbyReady. Until then a primary that may
//     still serve (not fenced) keeps serving, and a fenced primary means no
//     site serves; both with reason WaitingForStandby and RunStandby true.
//     StandbyReady gates moving to the standby, not staying there: a standby
//     that already serves keeps serving when it degrades, unless the
//     failback rule below applies (EndpointSlices route only to ready pods,
//     and a degraded site beats none).
//   - Failing back (standby to primary) needs the primary unfenced and
//     PrimaryReady; until then traffic stays on the standby with reason
//     WaitingForPrimary. Manual mode fails back as soon as RequestedSite is
//     Primary and the primary is Ready: a human asked. Automatic mode also
//     needs the anti-flap hold below.
//   - Manual mode with a fenced primary and RequestedSite Primary: no site
//     serves (PrimaryFenced) unless traffic is already on the standby, where
//     it stays (WaitingForPrimary); the responder must set activeSite to
//     Standby.
//
// # Anti-flap hold
//
// In Automatic mode traffic fails back only when the primary has been Ready
// continuously for the hold H = max(UnavailableAfter, 30s) and at least H has
// passed since traffic last moved (SwitchedAt). Failing over is never held: a
// fence or an outage of UnavailableAfter must be answered at once, and
// UnavailableAfter is itself the debounce in that direction. Together this
// moves traffic at most once per H in each direction: a failback is at least
// H after the failover before it, and the next failover needs a fresh outage
// of UnavailableAfter after a primary that was Ready at failback, so two
// failovers are at least H + UnavailableAfter apart (and likewise two
// failbacks). A primary that recovers and fails again within H never gets
// traffic back, because its ready-since clock restarts. H is never below 30s
// so that a short UnavailableAfter (minimum 5s) does not let a primary that
// crash-loops every few seconds pull traffic back and forth. In Automatic
// mode the hold applies however traffic got to the standby, including a
// forced switch that was cleared: the Input does not say why traffic is on
// the standby, and a responder who wants instant control uses the Manual
// trigger.
//
// One exception: in Automatic mode, when traffic is on the standby, the
// standby stops being Ready, and the primary is Ready and unfenced, traffic
// fails back at once without the hold (reason StandbyUnavailable): the hold
// protects against a flapping primary, and here the alternative is a
// degraded standby. It does not apply when a human asked for the standby
// (activeSite Standby, either trigger): then the standby is wanted, careplane
// honours the request, and the message says the standby is not Ready.
//
// # Flags and requeues
//
// Failover is true only on the decision that puts traffic on the standby from
// anywhere else (the primary, or no site, as when a fenced primary waited for
// a Cold standby); Failback only on the decision that moves traffic from the
// standby to the primary. A decision that stops all traffic sets neither.
//
// RequeueAfter is set, with a margin of 100ms, only for waits that nothing
// but time ends: a primary critical service down for less than
// UnavailableAfter (when that outage is what would move traffic), and a
// failback waiting for the hold. Readiness changes wake the reconciler
// through its watches, so they need no requeue.
package failover

//! RFC 3261 §17 non-INVITE transactions driven by a manual clock
//! (standards.md §14, §16 cases 72–75).

use xmpp_sip_gateway::core::ids::IdGenerator;
use xmpp_sip_gateway::core::sip::headers::top_via;
use xmpp_sip_gateway::core::sip::message::response_to;
use xmpp_sip_gateway::core::sip::transaction::{
    RequestDisposition, TransactionLayer, TxConfig, TxEvent,
};
use xmpp_sip_gateway::core::sip::{Method, Peer, Request, Response, SipMessage, Transport};
use xmpp_sip_gateway::core::time::{ManualClock, Timestamp};

const START: u64 = 1_000_000;

fn peer(transport: Transport, addr: &str) -> Peer {
    Peer {
        transport,
        addr: addr.parse().unwrap(),
    }
}

fn udp_peer() -> Peer {
    peer(Transport::Udp, "192.0.2.10:5060")
}

fn subscribe() -> Request {
    let mut r = Request::new(Method::Subscribe, "sip:ben@sip.example");
    r.headers.push("From", "<sip:anna@gw.example>;tag=a1");
    r.headers.push("To", "<sip:ben@sip.example>");
    r.headers.push("Call-ID", "c1@gw.example");
    r.headers.push("CSeq", "1 SUBSCRIBE");
    r.headers.push("Event", "presence");
    r.headers.push("Expires", "3600");
    r
}

struct Harness {
    clock: ManualClock,
    ids: IdGenerator,
    layer: TransactionLayer,
}

impl Harness {
    fn new() -> Self {
        Harness {
            clock: ManualClock::starting_at(Timestamp::from_millis(START)),
            ids: IdGenerator::seeded(7),
            layer: TransactionLayer::new(TxConfig::default()),
        }
    }

    fn drain(&mut self) -> Vec<(Peer, SipMessage)> {
        std::iter::from_fn(|| self.layer.poll_transmit()).collect()
    }

    /// Runs the clock to `until_ms` after START, firing timers at each deadline, and
    /// records (ms since START, transmissions) and events.
    fn run_until(&mut self, until_ms: u64) -> (Vec<u64>, Vec<TxEvent>) {
        let mut sends = Vec::new();
        let mut events = Vec::new();
        let end = Timestamp::from_millis(START + until_ms);
        while let Some(d) = self.layer.next_deadline() {
            if d > end {
                break;
            }
            self.clock.set(d);
            events.extend(self.layer.handle_timeout(d));
            for _ in self.drain() {
                sends.push(d.as_millis() - START);
            }
        }
        self.clock.set(end);
        (sends, events)
    }

    fn at(&mut self, ms: u64) -> Timestamp {
        let t = Timestamp::from_millis(START + ms);
        self.clock.set(t);
        t
    }

    fn start_subscribe(
        &mut self,
        to: Peer,
    ) -> (
        xmpp_sip_gateway::core::sip::transaction::ClientTxId,
        Request,
    ) {
        let now = self.clock.now();
        let tx = self.layer.send_request(now, &mut self.ids, to, subscribe());
        let sent = self.drain();
        assert_eq!(sent.len(), 1);
        let SipMessage::Request(req) = sent[0].1.clone() else {
            panic!("not a request")
        };
        (tx, req)
    }
}

fn reply(req: &Request, status: u16) -> Response {
    response_to(req, status, if status < 200 { "Trying" } else { "OK" })
}

#[test]
fn send_request_adds_top_via_with_branch_and_rport() {
    let mut h = Harness::new();
    let (_, req) = h.start_subscribe(udp_peer());
    let via = top_via(&req.headers).unwrap();
    assert_eq!(via.transport, "UDP");
    assert_eq!(via.sent_by(), "127.0.0.1:5060");
    assert!(via.branch().unwrap().starts_with("z9hG4bK"));
    assert_eq!(via.rport(), Some(None));
}

#[test]
fn send_request_replaces_any_stale_via() {
    let mut h = Harness::new();
    let mut req = subscribe();
    req.headers
        .push("Via", "SIP/2.0/UDP old.example;branch=z9hG4bKold");
    let now = h.clock.now();
    h.layer.send_request(now, &mut h.ids, udp_peer(), req);
    let SipMessage::Request(sent) = h.drain().remove(0).1 else {
        panic!()
    };
    assert_eq!(sent.headers.count("Via"), 1);
    assert_ne!(top_via(&sent.headers).unwrap().branch(), Some("z9hG4bKold"));
}

/// standards.md §16 case 72: retransmits at 0.5, 1.5, 3.5, 7.5, 11.5 … s; Timer F at 32 s.
#[test]
fn udp_request_without_answer_retransmits_with_doubling_then_times_out_at_32s() {
    let mut h = Harness::new();
    let (tx, _) = h.start_subscribe(udp_peer());
    let (sends, events) = h.run_until(40_000);
    assert_eq!(
        sends,
        vec![500, 1_500, 3_500, 7_500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500]
    );
    assert_eq!(events, vec![TxEvent::Timeout { tx }]);
    assert_eq!(h.layer.counts(), (0, 0));
    assert_eq!(h.layer.next_deadline(), None);
}

#[test]
fn timeout_is_reported_exactly_at_timer_f() {
    let mut h = Harness::new();
    h.start_subscribe(udp_peer());
    let (_, events) = h.run_until(31_999);
    assert!(events.is_empty());
    let (_, events) = h.run_until(32_000);
    assert_eq!(events.len(), 1);
}

/// standards.md §16 case 73: after a 100 Trying the retransmit interval becomes T2.
#[test]
fn after_100_trying_retransmit_interval_is_t2() {
    let mut h = Harness::new();
    let (tx, req) = h.start_subscribe(udp_peer());
    let (sends, _) = h.run_until(1_000); // first retransmission at 0.5 s
    assert_eq!(sends, vec![500]);
    let now = h.at(1_000);
    let ev = h.layer.on_response(now, udp_peer(), reply(&req, 100));
    assert!(
        matches!(ev, Some(TxEvent::Response { tx: t, ref response }) if t == tx && response.status == 100)
    );
    // E was due at 1.5 s; from then on it fires every 4 s.
    let (sends, events) = h.run_until(14_000);
    assert_eq!(sends, vec![1_500, 5_500, 9_500, 13_500]);
    assert!(events.is_empty());
}

#[test]
fn proceeding_transaction_still_times_out_on_timer_f() {
    let mut h = Harness::new();
    let (tx, req) = h.start_subscribe(udp_peer());
    let now = h.at(100);
    h.layer.on_response(now, udp_peer(), reply(&req, 100));
    let (_, events) = h.run_until(33_000);
    assert_eq!(events, vec![TxEvent::Timeout { tx }]);
}

#[test]
fn final_response_is_delivered_and_stops_retransmissions() {
    let mut h = Harness::new();
    let (tx, req) = h.start_subscribe(udp_peer());
    let now = h.at(200);
    let ev = h.layer.on_response(now, udp_peer(), reply(&req, 200));
    assert!(
        matches!(ev, Some(TxEvent::Response { tx: t, ref response }) if t == tx && response.status == 200)
    );
    let (sends, events) = h.run_until(40_000);
    assert!(sends.is_empty());
    assert!(events.is_empty());
}

/// standards.md §16 case 74: a 200 retransmission within Timer K is absorbed.
#[test]
fn response_retransmission_within_timer_k_is_absorbed() {
    let mut h = Harness::new();
    let (_, req) = h.start_subscribe(udp_peer());
    let now = h.at(200);
    assert!(h
        .layer
        .on_response(now, udp_peer(), reply(&req, 200))
        .is_some());
    let now = h.at(3_000);
    assert_eq!(h.layer.on_response(now, udp_peer(), reply(&req, 200)), None);
    assert_eq!(h.layer.counts().0, 1, "still in Completed until Timer K");
    h.run_until(5_200);
    assert_eq!(
        h.layer.counts().0,
        0,
        "Timer K (T4 = 5 s) ended the transaction"
    );
}

#[test]
fn response_with_other_cseq_method_does_not_match() {
    let mut h = Harness::new();
    let (_, req) = h.start_subscribe(udp_peer());
    let mut resp = reply(&req, 200);
    resp.headers.set("CSeq", "1 NOTIFY");
    let now = h.at(100);
    assert_eq!(h.layer.on_response(now, udp_peer(), resp), None);
}

#[test]
fn response_with_unknown_branch_is_dropped() {
    let mut h = Harness::new();
    let (_, req) = h.start_subscribe(udp_peer());
    let mut resp = reply(&req, 200);
    resp.headers
        .set("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKother");
    let now = h.at(100);
    assert_eq!(h.layer.on_response(now, udp_peer(), resp), None);
}

#[test]
fn tcp_request_is_never_retransmitted_and_times_out_on_f() {
    let mut h = Harness::new();
    let tcp = peer(Transport::Tcp, "192.0.2.10:5060");
    let (tx, req) = h.start_subscribe(tcp);
    assert_eq!(top_via(&req.headers).unwrap().transport, "TCP");
    let (sends, events) = h.run_until(40_000);
    assert!(sends.is_empty());
    assert_eq!(events, vec![TxEvent::Timeout { tx }]);
}

#[test]
fn tcp_final_response_ends_transaction_at_once_timer_k_zero() {
    let mut h = Harness::new();
    let tcp = peer(Transport::Tcp, "192.0.2.10:5060");
    let (_, req) = h.start_subscribe(tcp);
    let now = h.at(100);
    assert!(h.layer.on_response(now, tcp, reply(&req, 200)).is_some());
    assert_eq!(h.layer.counts().0, 0);
    assert_eq!(h.layer.on_response(now, tcp, reply(&req, 200)), None);
}

#[test]
fn transport_error_reports_timeout_for_transactions_to_that_peer() {
    let mut h = Harness::new();
    let (tx, _) = h.start_subscribe(udp_peer());
    let (_other, _) = h.start_subscribe(peer(Transport::Udp, "192.0.2.11:5060"));
    assert_eq!(
        h.layer.on_transport_error(udp_peer()),
        vec![TxEvent::Timeout { tx }]
    );
    assert_eq!(h.layer.counts().0, 1);
}

// --- server side --------------------------------------------------------------

/// A NOTIFY whose top Via names a proxy's port without `rport`, received from another
/// source port: responses go to the source IP and the Via port (RFC 3261 §18.2.2).
fn notify_via_proxy_without_rport() -> (Request, Peer) {
    let mut notify = incoming_notify("z9hG4bKn1");
    notify.headers.set(
        "Via",
        "SIP/2.0/UDP proxy.example:5070;branch=z9hG4bKn1;received=192.0.2.10",
    );
    (notify, peer(Transport::Udp, "192.0.2.10:33333"))
}

fn incoming_notify(branch: &str) -> Request {
    let mut r = Request::new(Method::Notify, "sip:anna@gw.example");
    r.headers.push(
        "Via",
        format!("SIP/2.0/UDP 192.0.2.10:5060;branch={branch};rport=5060;received=192.0.2.10"),
    );
    r.headers.push("From", "<sip:ben@sip.example>;tag=b1");
    r.headers.push("To", "<sip:anna@gw.example>;tag=a1");
    r.headers.push("Call-ID", "c1@gw.example");
    r.headers.push("CSeq", "5 NOTIFY");
    r.headers.push("Event", "presence");
    r.headers.push("Subscription-State", "active;expires=600");
    r
}

/// standards.md §16 case 75: NOTIFY retransmitted after our 200 → identical 200 again,
/// no second delivery (Timer J).
#[test]
fn notify_retransmission_after_200_gets_identical_200_and_no_second_delivery() {
    let mut h = Harness::new();
    let notify = incoming_notify("z9hG4bKn1");
    let now = h.at(0);
    let RequestDisposition::New(tx) = h.layer.on_request(now, udp_peer(), &notify) else {
        panic!("first NOTIFY must be new")
    };
    let ok = reply(&notify, 200);
    h.layer.respond(now, tx, ok.clone());
    let first = h.drain();
    assert_eq!(first, vec![(udp_peer(), SipMessage::Response(ok.clone()))]);

    let now = h.at(2_000);
    assert_eq!(
        h.layer.on_request(now, udp_peer(), &notify),
        RequestDisposition::Retransmission
    );
    assert_eq!(h.drain(), first);
}

#[test]
fn server_transaction_ends_after_timer_j_and_request_is_new_again() {
    let mut h = Harness::new();
    let notify = incoming_notify("z9hG4bKn1");
    let now = h.at(0);
    let RequestDisposition::New(tx) = h.layer.on_request(now, udp_peer(), &notify) else {
        panic!()
    };
    h.layer.respond(now, tx, reply(&notify, 200));
    h.drain();
    h.run_until(31_999);
    assert_eq!(h.layer.counts().1, 1);
    h.run_until(32_000);
    assert_eq!(h.layer.counts().1, 0);
    let now = h.clock.now();
    assert!(matches!(
        h.layer.on_request(now, udp_peer(), &notify),
        RequestDisposition::New(_)
    ));
}

#[test]
fn tcp_server_transaction_has_timer_j_zero() {
    let mut h = Harness::new();
    let tcp = peer(Transport::Tcp, "192.0.2.10:40000");
    let notify = incoming_notify("z9hG4bKn1");
    let now = h.at(0);
    let RequestDisposition::New(tx) = h.layer.on_request(now, tcp, &notify) else {
        panic!()
    };
    h.layer.respond(now, tx, reply(&notify, 200));
    assert_eq!(
        h.drain()[0].0,
        tcp,
        "TCP responses go back over the connection"
    );
    assert_eq!(h.layer.next_deadline(), Some(now));
    h.layer.handle_timeout(now);
    assert_eq!(h.layer.counts().1, 0);
}

#[test]
fn retransmission_while_trying_is_absorbed_silently() {
    let mut h = Harness::new();
    let notify = incoming_notify("z9hG4bKn1");
    let now = h.at(0);
    assert!(matches!(
        h.layer.on_request(now, udp_peer(), &notify),
        RequestDisposition::New(_)
    ));
    assert_eq!(
        h.layer.on_request(now, udp_peer(), &notify),
        RequestDisposition::Retransmission
    );
    assert!(h.drain().is_empty());
}

#[test]
fn retransmission_while_proceeding_resends_last_provisional() {
    let mut h = Harness::new();
    let notify = incoming_notify("z9hG4bKn1");
    let now = h.at(0);
    let RequestDisposition::New(tx) = h.layer.on_request(now, udp_peer(), &notify) else {
        panic!()
    };
    let trying = reply(&notify, 100);
    h.layer.respond(now, tx, trying.clone());
    h.drain();
    assert_eq!(
        h.layer.on_request(now, udp_peer(), &notify),
        RequestDisposition::Retransmission
    );
    assert_eq!(h.drain(), vec![(udp_peer(), SipMessage::Response(trying))]);
}

#[test]
fn same_branch_from_other_sent_by_is_a_new_transaction() {
    let mut h = Harness::new();
    let a = incoming_notify("z9hG4bKsame");
    let mut b = a.clone();
    b.headers
        .set("Via", "SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKsame");
    let now = h.at(0);
    assert!(matches!(
        h.layer.on_request(now, udp_peer(), &a),
        RequestDisposition::New(_)
    ));
    assert!(matches!(
        h.layer.on_request(now, udp_peer(), &b),
        RequestDisposition::New(_)
    ));
}

#[test]
fn cancel_is_its_own_transaction_and_finds_its_target() {
    let mut h = Harness::new();
    let sub = {
        let mut r = incoming_notify("z9hG4bKc1");
        r.method = Method::Subscribe;
        r.headers.set("CSeq", "5 SUBSCRIBE");
        r
    };
    let mut cancel = sub.clone();
    cancel.method = Method::Cancel;
    cancel.headers.set("CSeq", "5 CANCEL");
    let now = h.at(0);
    let RequestDisposition::New(target) = h.layer.on_request(now, udp_peer(), &sub) else {
        panic!()
    };
    let RequestDisposition::New(ctx) = h.layer.on_request(now, udp_peer(), &cancel) else {
        panic!("CANCEL must get its own transaction")
    };
    assert_ne!(ctx, target);
    assert_eq!(h.layer.cancel_target(&cancel), Some(target));
}

#[test]
fn second_final_response_is_dropped() {
    let mut h = Harness::new();
    let notify = incoming_notify("z9hG4bKn1");
    let now = h.at(0);
    let RequestDisposition::New(tx) = h.layer.on_request(now, udp_peer(), &notify) else {
        panic!()
    };
    h.layer.respond(now, tx, reply(&notify, 200));
    h.layer.respond(now, tx, reply(&notify, 500));
    assert_eq!(h.drain().len(), 1);
}

#[test]
fn udp_response_without_rport_goes_to_source_ip_and_via_port() {
    let mut h = Harness::new();
    let (notify, from) = notify_via_proxy_without_rport();
    let now = h.at(0);
    let RequestDisposition::New(tx) = h.layer.on_request(now, from, &notify) else {
        panic!()
    };
    h.layer.respond(now, tx, reply(&notify, 200));
    assert_eq!(h.drain()[0].0, peer(Transport::Udp, "192.0.2.10:5070"));
}

#[test]
fn udp_response_with_rport_goes_to_source_port() {
    let mut h = Harness::new();
    let mut notify = incoming_notify("z9hG4bKn1");
    notify.headers.set(
        "Via",
        "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKn1;rport=33333;received=192.0.2.10",
    );
    let from = peer(Transport::Udp, "192.0.2.10:33333");
    let now = h.at(0);
    let RequestDisposition::New(tx) = h.layer.on_request(now, from, &notify) else {
        panic!()
    };
    h.layer.respond(now, tx, reply(&notify, 200));
    assert_eq!(h.drain()[0].0, from);
}

#[test]
fn stateless_response_is_routed_by_the_given_via() {
    let mut h = Harness::new();
    let from = peer(Transport::Udp, "192.0.2.10:33333");
    h.layer.respond_stateless(
        from,
        Some("SIP/2.0/UDP x.example:5080;branch=z9hG4bK1"),
        Response::new(400, "Bad Request"),
    );
    h.layer
        .respond_stateless(from, None, Response::new(400, "Bad Request"));
    let sent = h.drain();
    assert_eq!(sent[0].0, peer(Transport::Udp, "192.0.2.10:5080"));
    assert_eq!(sent[1].0, from);
}

#[test]
fn ack_is_absorbed_by_the_invite_transaction_it_acknowledges() {
    let mut h = Harness::new();
    let mut invite = incoming_notify("z9hG4bKi1");
    invite.method = Method::Invite;
    invite.headers.set("CSeq", "1 INVITE");
    let mut ack = invite.clone();
    ack.method = Method::Ack;
    ack.headers.set("CSeq", "1 ACK");
    let now = h.at(0);
    let RequestDisposition::New(tx) = h.layer.on_request(now, udp_peer(), &invite) else {
        panic!()
    };
    h.layer.respond(now, tx, reply(&invite, 405));
    h.drain();
    assert_eq!(
        h.layer.on_request(now, udp_peer(), &ack),
        RequestDisposition::Retransmission
    );
    assert!(h.drain().is_empty());
}

/// Completed transactions hold only what Completed needs (they live 64·T1 on UDP): a
/// server transaction its final response and where it goes, a client transaction its
/// match key. The request is gone, retransmissions are still handled.
#[test]
fn completed_transactions_drop_the_request_and_still_handle_retransmissions() {
    let mut h = Harness::new();
    let (notify, from) = notify_via_proxy_without_rport();
    let now = h.at(0);
    let RequestDisposition::New(stx) = h.layer.on_request(now, from, &notify) else {
        panic!()
    };
    assert_eq!(h.layer.server_request(stx), Some(&notify));
    h.layer.respond(now, stx, reply(&notify, 200));
    let first = h.drain();
    assert_eq!(h.layer.server_request(stx), None);
    let now = h.at(10_000);
    assert_eq!(
        h.layer.on_request(now, from, &notify),
        RequestDisposition::Retransmission
    );
    assert_eq!(h.drain(), first, "same 200 to the same Via port");

    let (ctx, req) = h.start_subscribe(udp_peer());
    assert!(h.layer.client_request(ctx).is_some());
    let now = h.at(10_200);
    assert!(h
        .layer
        .on_response(now, udp_peer(), reply(&req, 200))
        .is_some());
    assert_eq!(h.layer.client_request(ctx), None);
    let now = h.at(11_000);
    assert_eq!(h.layer.on_response(now, udp_peer(), reply(&req, 200)), None);
    let (sends, events) = h.run_until(40_000);
    assert!(sends.is_empty() && events.is_empty());
}

#[test]
fn unanswered_server_transaction_is_dropped_after_64_t1() {
    let mut h = Harness::new();
    let notify = incoming_notify("z9hG4bKn1");
    let now = h.at(0);
    let RequestDisposition::New(tx) = h.layer.on_request(now, udp_peer(), &notify) else {
        panic!()
    };
    h.run_until(32_000);
    assert_eq!(h.layer.server_request(tx), None);
}

#[test]
fn legacy_request_without_cookie_matches_retransmission() {
    let mut h = Harness::new();
    let mut notify = incoming_notify("x");
    notify
        .headers
        .set("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=1234");
    let now = h.at(0);
    let RequestDisposition::New(tx) = h.layer.on_request(now, udp_peer(), &notify) else {
        panic!()
    };
    h.layer.respond(now, tx, reply(&notify, 200));
    h.drain();
    assert_eq!(
        h.layer.on_request(now, udp_peer(), &notify),
        RequestDisposition::Retransmission
    );
    assert_eq!(h.drain().len(), 1);
}

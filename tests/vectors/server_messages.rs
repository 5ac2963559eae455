//! The typed side of the vectors: each `server_to_client` vector's message built from
//! typed values (taken from the vector's `input`, not from its expected bytes), and each
//! `client_to_server` packet parsed into a typed request.

use bytes::Bytes;
use serde_json::Value;

use espmail::log_redact::Sensitive;
use espmail::protocol::habitat::Packet;
use espmail::protocol::messages::{
    AvatarState, ClientMsg, ClientRequest, CommonState, ContentsVector, RegionState, ServerMessage,
    IM_ALIVE_OK_TEXT, UNASSIGNED_NOID,
};

/// The Elko JSON objects in a vector's `input` (one per line), or the text itself.
fn input(c: &Value) -> Vec<Value> {
    c["input"]
        .as_str()
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn num(v: &Value, k: &str) -> u8 {
    u8::try_from(v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"))).unwrap()
}

fn text(v: &Value) -> Sensitive<Vec<u8>> {
    Sensitive::new(v["text"].as_str().unwrap().as_bytes().to_vec())
}

/// The first mod of an Elko "make".
fn module(make: &Value) -> &Value {
    &make["obj"]["mods"][0]
}

fn common(m: &Value) -> CommonState {
    CommonState {
        style: num(m, "style"),
        x: num(m, "x"),
        y: num(m, "y"),
        orientation: num(m, "orientation"),
        gr_state: num(m, "gr_state"),
        container: 0,
    }
}

fn avatar(m: &Value) -> AvatarState {
    let custom = m["custom"].as_array().unwrap();
    AvatarState {
        common: common(m),
        activity: num(m, "activity"),
        action: num(m, "action"),
        health: num(m, "health"),
        restrainer: num(m, "restrainer"),
        custom: [
            u8::try_from(custom[0].as_u64().unwrap()).unwrap(),
            u8::try_from(custom[1].as_u64().unwrap()).unwrap(),
        ],
    }
}

/// Adds the objects of Elko "make" lines to a vector as bridge_v2 orders them: each
/// avatar with its head (contents first), then the other objects in order. A head is
/// contained in the avatar made just before it.
fn add_objects(mut v: ContentsVector, makes: &[Value]) -> ContentsVector {
    let mut i = 0;
    while i < makes.len() {
        let m = module(&makes[i]);
        let noid = num(m, "noid");
        match m["type"].as_str().unwrap() {
            "Avatar" => {
                let head = module(&makes[i + 1]);
                assert_eq!(head["type"], "Head");
                let head_state = CommonState {
                    container: noid,
                    ..common(head)
                };
                v = v.avatar_with_head(noid, avatar(m), num(head, "noid"), head_state);
                i += 2;
            }
            "Rock" => {
                let c = common(m);
                let state = [
                    c.style,
                    c.x,
                    c.y,
                    c.orientation,
                    c.gr_state,
                    0,
                    num(m, "mass"),
                ];
                v = v.object(noid, 61, &state);
                i += 1;
            }
            t => panic!("no state encoder for {t} in this test"),
        }
    }
    v
}

fn describe(c: &Value, seq: u8) -> ServerMessage {
    let makes = input(c);
    let region = module(&makes[0]);
    let me = module(&makes[1]);
    let state = RegionState {
        terrain: num(region, "terrain_type"),
        lighting: num(region, "lighting"),
        depth: num(region, "depth"),
        region_class: num(region, "region_class"),
        who_am_i: num(me, "noid"),
        bank: u32::try_from(me["bankBalance"].as_u64().unwrap()).unwrap(),
    };
    ServerMessage::DescribeReply {
        seq,
        vector: add_objects(ContentsVector::describe(state), &makes[1..]),
    }
}

/// Builds the messages of one `server_to_client` vector.
pub fn build(c: &Value) -> Option<Vec<ServerMessage>> {
    let name = c["name"].as_str().unwrap();
    let elko = input(c).into_iter().next().unwrap_or(Value::Null);
    let esp_reply = |seq, esp| ServerMessage::EspReply {
        seq,
        noid: num(&elko, "noid"),
        esp,
    };
    let talks = || ServerMessage::ObjectTalks {
        speaker: u8::try_from(elko["speaker"].as_u64().unwrap()).unwrap_or(UNASSIGNED_NOID),
        text: text(&elko),
    };
    Some(match name {
        "im_alive_reply" => vec![ServerMessage::ImAliveReply {
            status: 1,
            text: Bytes::from_static(IM_ALIVE_OK_TEXT),
        }],
        "describe_reply_contents_vector" => vec![describe(c, 5)],
        "describe_reply_two_avatars" => vec![describe(c, 6)],
        "describe_reply_split" => vec![describe(c, 7)],
        "hereis_other_avatar_arrives" | "hereis_simple_object" => vec![ServerMessage::HereIs(
            add_objects(ContentsVector::hereis(), &input(c)),
        )],
        "goaway_other_avatar_leaves" => vec![
            ServerMessage::GoAway { noid: 4 },
            ServerMessage::GoAway { noid: 5 },
        ],
        "goaway_async_op" => vec![ServerMessage::GoAway {
            noid: num(&elko, "target"),
        }],
        "speak_reply_esp_off" => vec![esp_reply(3, false)],
        "speak_reply_esp_on" | "speak_reply_esp_on_qlink" => vec![esp_reply(4, true)],
        "esp_reply_esp_on" => vec![esp_reply(5, true)],
        "esp_reply_esp_off" => vec![esp_reply(6, false)],
        "speak_broadcast" | "speak_private_cannot_contact" | "speak_broadcast_truncated_114" => {
            vec![ServerMessage::Speak {
                noid: num(&elko, "noid"),
                text: text(&elko),
            }]
        }
        "objectspeak_ascii_array" => vec![ServerMessage::ObjectTalks {
            speaker: num(&elko, "speaker"),
            text: Sensitive::new(
                elko["ascii"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| u8::try_from(b.as_u64().unwrap()).unwrap())
                    .collect(),
            ),
        }],
        n if n.starts_with("objectspeak_") => vec![talks()],
        n if n.starts_with("prompt_user_") => vec![ServerMessage::PromptUser(Bytes::from(
            elko["text"].as_str().unwrap().as_bytes().to_vec(),
        ))],
        "play_sound_esp_received" => vec![ServerMessage::Play {
            sound: num(&elko, "sfx_number"),
            noid: num(&elko, "from_noid"),
        }],
        "caught_up" => vec![ServerMessage::CaughtUp],
        "appearing" => vec![ServerMessage::Appear {
            noid: num(&elko, "appearing"),
        }],
        "walk_broadcast" => vec![ServerMessage::Async {
            noid: num(&elko, "noid"),
            reqnum: 8,
            args: Bytes::from(vec![num(&elko, "x"), num(&elko, "y"), num(&elko, "how")]),
        }],
        "diagnostic_objectspeak" => vec![ServerMessage::ObjectTalks {
            speaker: 2,
            text: Sensitive::new(b"Server forced exit [x] y".to_vec()),
        }],
        _ => return None,
    })
}

/// Parses a `client_to_server` packet into a typed request and checks it against the
/// vector (`parsed` and the JSON bridge_v2 forwarded). Returns whether it was checked.
pub fn check_client(c: &Value, packet: &Packet) -> bool {
    let name = c["name"].as_str().unwrap();
    let msg = ClientMsg::parse(packet).unwrap_or_else(|e| panic!("client_to_server {name}: {e}"));
    let p = &c["parsed"];
    assert_eq!(msg.seq, num(p, "seq"), "client_to_server {name}");
    assert_eq!(msg.noid, num(p, "noid"), "client_to_server {name}");
    let json: Option<Value> = c["elko_json"]
        .as_array()
        .and_then(|a| a.first())
        .and_then(|s| serde_json::from_str(s.as_str().unwrap()).ok());
    let forwarded_text = || json.as_ref().unwrap()["text"].as_str().unwrap().as_bytes();
    match &msg.request {
        ClientRequest::ImAlive => assert_eq!(name, "first_packet_im_alive"),
        ClientRequest::Describe => assert_eq!(name, "describe"),
        ClientRequest::FingerInQue => assert_eq!(name, "finger_in_que"),
        ClientRequest::HereIAm => assert_eq!(name, "here_i_am"),
        ClientRequest::Speak { audience, text } => {
            let j = json.as_ref().unwrap();
            assert_eq!(j["op"], "SPEAK", "client_to_server {name}");
            assert_eq!(u64::from(*audience), j["esp"].as_u64().unwrap(), "{name}");
            assert_eq!(text.expose().as_slice(), forwarded_text(), "{name}");
        }
        ClientRequest::Esp { text, .. } => {
            assert_eq!(
                json.as_ref().unwrap()["op"],
                "ESP",
                "client_to_server {name}"
            );
            assert_eq!(text.expose().as_slice(), forwarded_text(), "{name}");
        }
        ClientRequest::PromptReply { text } => {
            assert_eq!(
                json.as_ref().unwrap()["op"],
                "PROMPT_REPLY",
                "client_to_server {name}"
            );
            assert_eq!(text.expose().as_slice(), forwarded_text(), "{name}");
        }
        other => panic!("client_to_server {name}: unexpected {other:?}"),
    }
    // Building the request back gives the same packet.
    assert_eq!(
        ClientMsg::parse(&msg.to_packet()).as_ref(),
        Ok(&msg),
        "client_to_server {name}: rebuild"
    );
    true
}

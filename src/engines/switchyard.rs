//! Switchyard's own protocol, `switchyard.v1.Inference` (`proto/switchyard`):
//! the mock worker's, or a worker of one's own. Nothing to translate; no
//! model info, loads or tokenizer; PD by bootstrap host, port and a 64-bit
//! room.

use bytes::Bytes;
use prost::Message;

use super::seam::{EngineSeam, Method, PdStyle, Prompt, RankLoad, RequestView};
use super::translate::{Input, Sampling, TranslateError};
use crate::pb;
use crate::transport::Failure;
use crate::worker::{Engine, ModelFacts};

/// `switchyard.v1.Inference`.
#[derive(Debug)]
pub struct Switchyard;

/// What a switchyard.v1 worker answers for what its protocol lacks.
fn none(what: &'static str) -> Failure {
    Failure::BadReply(what)
}

impl EngineSeam for Switchyard {
    fn engine(&self) -> Engine {
        Engine::SWITCHYARD
    }

    fn wire(&self) -> pb::Engine {
        pb::Engine::Switchyard
    }

    fn path(&self, method: Method) -> Option<&'static str> {
        match method {
            Method::Abort => Some("/switchyard.v1.Inference/Abort"),
            _ => None,
        }
    }

    /// The whole server (""): `switchyard.v1` workers report no warm-up.
    fn health_service(&self) -> &'static str {
        ""
    }

    fn model_info(&self, _reply: Bytes) -> Result<ModelFacts, Failure> {
        Ok(ModelFacts::default())
    }

    fn abort_request(&self, request_id: &str) -> Vec<u8> {
        pb::AbortRequest {
            request_id: request_id.to_string(),
        }
        .encode_to_vec()
    }

    fn abort_reply(&self, reply: Bytes) -> Result<bool, Failure> {
        Ok(pb::AbortResponse::decode(reply)
            .map_err(|_| Failure::BadReply("switchyard.v1.AbortResponse"))?
            .aborted)
    }

    fn abort_ids(&self, message: Bytes) -> Result<Vec<String>, String> {
        let request = pb::AbortRequest::decode(message)
            .map_err(|e| format!("the message is not a valid AbortRequest: {e}"))?;
        Ok(vec![request.request_id])
    }

    fn abort_answer(&self, aborted: bool, _message: String) -> Bytes {
        pb::AbortResponse { aborted }.encode_to_vec().into()
    }

    fn loads(&self, _reply: Bytes) -> Result<Vec<RankLoad>, Failure> {
        Err(none("switchyard.v1 has no GetLoads"))
    }

    fn merge_loads(&self, _replies: Vec<Bytes>) -> Result<Bytes, Failure> {
        Err(none("switchyard.v1 has no GetLoads"))
    }

    fn health_answer(&self, _healthy: bool, _message: String) -> Bytes {
        Bytes::new()
    }

    fn view(&self, message: &Bytes) -> Result<RequestView, prost::DecodeError> {
        let view = pb::GenerateRequest::decode(message.clone())?;
        Ok(RequestView {
            request_id: view.request_id,
            model: Some(view.model),
            prompt: match view.input {
                Some(pb::generate_request::Input::Text(t)) => Prompt::Text(t),
                Some(pb::generate_request::Input::TokenIds(t)) => Prompt::TokenIds(t.ids),
                None => Prompt::None,
            },
        })
    }

    fn pd(&self) -> PdStyle {
        PdStyle::Bootstrap { rooms_below: None }
    }

    fn bootstrap(&self, host: &str, port: u16, room: u64) -> Vec<u8> {
        pb::GenerateRequest {
            disaggregated_params: Some(pb::DisaggregatedParams {
                bootstrap_host: host.to_string(),
                bootstrap_port: u32::from(port),
                bootstrap_room: room,
            }),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn takes_text(&self) -> bool {
        true
    }

    fn generate_request(
        &self,
        _request_id: &str,
        _input: Input,
        _sampling: &Sampling,
    ) -> Result<Bytes, TranslateError> {
        Err(TranslateError::Invalid(
            "switchyard.v1 calls are relayed, not translated".into(),
        ))
    }

    fn response(
        &self,
        message: Bytes,
    ) -> Result<(Option<pb::generate_response::Response>, u32), Failure> {
        let response = pb::GenerateResponse::decode(message)
            .map_err(|_| Failure::BadReply("switchyard.v1.GenerateResponse"))?
            .response;
        Ok((response, 0))
    }
}

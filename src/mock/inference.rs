//! The mock as a `switchyard.v1.Inference` worker: `Generate` (echoing
//! fields its proto does not know) and `Abort`.

use super::*;

fn response(request_id: &str, body: pb::generate_response::Response, echo: &Bytes) -> Bytes {
    let message = pb::GenerateResponse {
        request_id: request_id.to_string(),
        response: Some(body),
    };
    let mut out = BytesMut::with_capacity(message.encoded_len() + echo.len());
    message.encode_raw(&mut out);
    out.extend_from_slice(echo);
    out.freeze()
}

#[tonic::async_trait]
impl Inference for MockService {
    type GenerateStream = ReceiverStream<Result<Bytes, Status>>;

    async fn generate(
        &self,
        request: Request<Bytes>,
    ) -> Result<Response<Self::GenerateStream>, Status> {
        let (metadata, _, body) = request.into_parts();
        let view = pb::GenerateRequest::decode(body.clone())
            .map_err(|e| Status::invalid_argument(format!("not a GenerateRequest: {e}")))?;
        let echo = unknown_fields(&body, KNOWN_REQUEST_FIELDS).map_err(Status::invalid_argument)?;
        let seen = SeenRequest {
            sampling: None,
            request_id: view.request_id.clone(),
            model: view.model.clone(),
            x_request_id: metadata
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(String::from),
            timeout: metadata
                .get("grpc-timeout")
                .and_then(|v| v.to_str().ok())
                .and_then(crate::transport::grpc::metadata::parse_grpc_timeout),
            unknown_fields: echo.clone(),
            metadata: metadata
                .clone()
                .into_headers()
                .iter()
                .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
                .collect(),
            disaggregated: view.disaggregated_params.clone(),
            token_ids: match &view.input {
                Some(pb::generate_request::Input::TokenIds(t)) => t.ids.clone(),
                _ => Vec::new(),
            },
            kv_transfer_params: None,
        };
        let config = self.admit(seen, view.disaggregated_params.as_ref()).await?;
        let tokens = view
            .sampling_params
            .as_ref()
            .map(|s| s.max_new_tokens)
            .filter(|n| *n > 0)
            .unwrap_or(config.tokens);
        let prompt_tokens = match &view.input {
            Some(pb::generate_request::Input::Text(t)) => t.split_whitespace().count() as u32,
            Some(pb::generate_request::Input::TokenIds(t)) => t.ids.len() as u32,
            None => 0,
        };
        let request_id = view.request_id;
        let request_id_for_encode = request_id.clone();
        let encode = move |piece: Piece| {
            use pb::generate_response::Response as R;
            let body = match piece {
                Piece::Token(i, text) => R::Chunk(pb::GenerateChunk {
                    token_ids: vec![i],
                    text,
                    logprobs: None,
                }),
                Piece::Finish(reason, completion) => R::Complete(pb::GenerateComplete {
                    finish_reason: reason.into(),
                    prompt_tokens,
                    completion_tokens: completion,
                    cached_tokens: 0,
                    matched_stop: String::new(),
                }),
                Piece::Fail(message) => return Err(Status::internal(message)),
            };
            Ok(response(&request_id_for_encode, body, &echo))
        };
        let rx = self.spawn_generation(config, request_id, tokens, encode);
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn abort(&self, request: Request<Bytes>) -> Result<Response<Bytes>, Status> {
        let abort = pb::AbortRequest::decode(request.into_inner())
            .map_err(|e| Status::invalid_argument(format!("not an AbortRequest: {e}")))?;
        let aborted = self.abort_request(&abort.request_id);
        Ok(Response::new(Bytes::from(
            pb::AbortResponse { aborted }.encode_to_vec(),
        )))
    }
}

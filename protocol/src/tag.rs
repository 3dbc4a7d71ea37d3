//! Message tags: the first byte of every message after the startup phase.
//!
//! One constant per message type of protocol 3.0, named after the message in
//! PostgreSQL's "Message Formats" chapter, split by the direction the message
//! travels. A byte means different things in each direction (`b'C'` is Close
//! from a client but CommandComplete from a server, `b'S'` Sync or
//! ParameterStatus, `b'H'` Flush or CopyOutResponse), so always name the
//! direction: `tag::frontend::SYNC`, `tag::backend::PARAMETER_STATUS`.
//!
//! The startup-phase packets (StartupMessage, SSLRequest, GSSENCRequest,
//! CancelRequest) have no tag; see [`crate::startup`].
//!
//! In a `match`, use the constants by path (`fe::QUERY =>`, after
//! `use pgsplit_protocol::tag::frontend as fe;`), never imported bare: a
//! misspelled bare name would silently become a catch-all binding.

/// Messages a client (frontend) sends.
pub mod frontend {
    /// Bind: a portal from a prepared statement and parameter values.
    pub const BIND: u8 = b'B';
    /// Close: a prepared statement or portal.
    pub const CLOSE: u8 = b'C';
    /// CopyData (both directions: same byte as [`super::backend::COPY_DATA`]).
    pub const COPY_DATA: u8 = b'd';
    /// CopyDone (both directions: same byte as [`super::backend::COPY_DONE`]).
    pub const COPY_DONE: u8 = b'c';
    /// CopyFail: the client aborts COPY FROM STDIN.
    pub const COPY_FAIL: u8 = b'f';
    /// Describe: a prepared statement or portal.
    pub const DESCRIBE: u8 = b'D';
    /// Execute: run a portal.
    pub const EXECUTE: u8 = b'E';
    /// Flush: send what is pending without ending the pipeline.
    pub const FLUSH: u8 = b'H';
    /// FunctionCall (fast-path function call).
    pub const FUNCTION_CALL: u8 = b'F';
    /// Parse: prepare a statement.
    pub const PARSE: u8 = b'P';
    /// Query: a simple-protocol query string.
    pub const QUERY: u8 = b'Q';
    /// Sync: ends an extended-protocol pipeline.
    pub const SYNC: u8 = b'S';
    /// Terminate: the client is leaving.
    pub const TERMINATE: u8 = b'X';

    /// Whether a client may send `tag` once the session has started, as
    /// PostgreSQL's own loop accepts them (a password message is for the
    /// startup phase only).
    pub const fn is_session_message(tag: u8) -> bool {
        matches!(
            tag,
            BIND | CLOSE
                | COPY_DATA
                | COPY_DONE
                | COPY_FAIL
                | DESCRIBE
                | EXECUTE
                | FLUSH
                | FUNCTION_CALL
                | PARSE
                | QUERY
                | SYNC
                | TERMINATE
        )
    }
    /// PasswordMessage. GSSResponse, SASLInitialResponse and SASLResponse
    /// share this byte; only the authentication exchange under way tells
    /// them apart (the aliases below name the same byte).
    pub const PASSWORD: u8 = b'p';
    /// SASLInitialResponse (same byte as [`PASSWORD`]).
    pub const SASL_INITIAL_RESPONSE: u8 = PASSWORD;
    /// SASLResponse (same byte as [`PASSWORD`]).
    pub const SASL_RESPONSE: u8 = PASSWORD;
    /// GSSResponse (same byte as [`PASSWORD`]).
    pub const GSS_RESPONSE: u8 = PASSWORD;
}

/// Messages a server (backend) sends.
pub mod backend {
    /// Authentication: every AuthenticationXxx request (Ok, CleartextPassword,
    /// MD5Password, SASL, SASLContinue, SASLFinal, GSS...), told apart by the
    /// Int32 code that starts the body.
    pub const AUTHENTICATION: u8 = b'R';
    /// BackendKeyData: the process id and secret key for CancelRequest.
    pub const BACKEND_KEY_DATA: u8 = b'K';
    /// BindComplete (empty body).
    pub const BIND_COMPLETE: u8 = b'2';
    /// CloseComplete (empty body).
    pub const CLOSE_COMPLETE: u8 = b'3';
    /// CommandComplete: the command tag.
    pub const COMMAND_COMPLETE: u8 = b'C';
    /// CopyData (both directions: same byte as [`super::frontend::COPY_DATA`]).
    pub const COPY_DATA: u8 = b'd';
    /// CopyDone (empty body; both directions, same byte as
    /// [`super::frontend::COPY_DONE`]).
    pub const COPY_DONE: u8 = b'c';
    /// CopyInResponse: COPY FROM STDIN begins.
    pub const COPY_IN_RESPONSE: u8 = b'G';
    /// CopyOutResponse: COPY TO STDOUT begins.
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    /// CopyBothResponse: copy-both mode (streaming replication) begins.
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    /// DataRow: one row of a result.
    pub const DATA_ROW: u8 = b'D';
    /// EmptyQueryResponse (empty body): the query string was empty.
    pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
    /// ErrorResponse.
    pub const ERROR_RESPONSE: u8 = b'E';
    /// FunctionCallResponse: the result of a FunctionCall.
    pub const FUNCTION_CALL_RESPONSE: u8 = b'V';
    /// NegotiateProtocolVersion: the newest minor version the server speaks
    /// and the `_pq_.` options it does not recognize.
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
    /// NoData (empty body): the statement or portal returns no rows.
    pub const NO_DATA: u8 = b'n';
    /// NoticeResponse.
    pub const NOTICE_RESPONSE: u8 = b'N';
    /// NotificationResponse: a NOTIFY delivered to a LISTENing session.
    pub const NOTIFICATION_RESPONSE: u8 = b'A';
    /// ParameterDescription: the parameter types of a described statement.
    pub const PARAMETER_DESCRIPTION: u8 = b't';
    /// ParameterStatus: a run-time parameter's current value.
    pub const PARAMETER_STATUS: u8 = b'S';
    /// ParseComplete (empty body).
    pub const PARSE_COMPLETE: u8 = b'1';
    /// PortalSuspended (empty body): Execute's row limit was reached.
    pub const PORTAL_SUSPENDED: u8 = b's';
    /// ReadyForQuery: the transaction status; the server awaits a new request.
    pub const READY_FOR_QUERY: u8 = b'Z';
    /// RowDescription: the columns of the rows that follow.
    pub const ROW_DESCRIPTION: u8 = b'T';

    /// Whether a server message with `tag` always has an empty body
    /// (ParseComplete, BindComplete, CloseComplete, NoData, PortalSuspended,
    /// EmptyQueryResponse, CopyDone): the messages
    /// [`crate::encode::empty_message`] may write.
    pub const fn has_empty_body(tag: u8) -> bool {
        matches!(
            tag,
            PARSE_COMPLETE
                | BIND_COMPLETE
                | CLOSE_COMPLETE
                | NO_DATA
                | PORTAL_SUSPENDED
                | EMPTY_QUERY_RESPONSE
                | COPY_DONE
        )
    }
}

#[cfg(test)]
mod tests {
    use super::{backend as be, frontend as fe};

    const FRONTEND: &[u8] = &[
        fe::BIND,
        fe::CLOSE,
        fe::COPY_DATA,
        fe::COPY_DONE,
        fe::COPY_FAIL,
        fe::DESCRIBE,
        fe::EXECUTE,
        fe::FLUSH,
        fe::FUNCTION_CALL,
        fe::PARSE,
        fe::QUERY,
        fe::SYNC,
        fe::TERMINATE,
        fe::PASSWORD,
    ];

    const BACKEND: &[u8] = &[
        be::AUTHENTICATION,
        be::BACKEND_KEY_DATA,
        be::BIND_COMPLETE,
        be::CLOSE_COMPLETE,
        be::COMMAND_COMPLETE,
        be::COPY_DATA,
        be::COPY_DONE,
        be::COPY_IN_RESPONSE,
        be::COPY_OUT_RESPONSE,
        be::COPY_BOTH_RESPONSE,
        be::DATA_ROW,
        be::EMPTY_QUERY_RESPONSE,
        be::ERROR_RESPONSE,
        be::FUNCTION_CALL_RESPONSE,
        be::NEGOTIATE_PROTOCOL_VERSION,
        be::NO_DATA,
        be::NOTICE_RESPONSE,
        be::NOTIFICATION_RESPONSE,
        be::PARAMETER_DESCRIPTION,
        be::PARAMETER_STATUS,
        be::PARSE_COMPLETE,
        be::PORTAL_SUSPENDED,
        be::READY_FOR_QUERY,
        be::ROW_DESCRIPTION,
    ];

    fn assert_distinct(tags: &[u8]) {
        for (i, a) in tags.iter().enumerate() {
            for b in &tags[i + 1..] {
                assert_ne!(a, b, "{:?} used twice", *a as char);
            }
        }
    }

    #[test]
    fn tags_are_distinct_within_a_direction() {
        assert_distinct(FRONTEND);
        assert_distinct(BACKEND);
    }

    #[test]
    fn copy_data_and_done_are_shared_and_passwords_share_p() {
        assert_eq!(fe::COPY_DATA, be::COPY_DATA);
        assert_eq!(fe::COPY_DONE, be::COPY_DONE);
        for t in [
            fe::SASL_INITIAL_RESPONSE,
            fe::SASL_RESPONSE,
            fe::GSS_RESPONSE,
        ] {
            assert_eq!(t, fe::PASSWORD);
        }
    }

    #[test]
    fn only_acknowledgements_have_empty_bodies() {
        let empty: Vec<u8> = BACKEND
            .iter()
            .copied()
            .filter(|&t| be::has_empty_body(t))
            .collect();
        assert_eq!(
            empty,
            [
                be::BIND_COMPLETE,
                be::CLOSE_COMPLETE,
                be::COPY_DONE,
                be::EMPTY_QUERY_RESPONSE,
                be::NO_DATA,
                be::PARSE_COMPLETE,
                be::PORTAL_SUSPENDED,
            ]
        );
    }

    /// A second source for the bytes: rust-postgres's own backend tags.
    #[test]
    fn backend_tags_agree_with_postgres_protocol() {
        use postgres_protocol::message::backend as pp;
        let pairs = [
            (be::PARSE_COMPLETE, pp::PARSE_COMPLETE_TAG),
            (be::BIND_COMPLETE, pp::BIND_COMPLETE_TAG),
            (be::CLOSE_COMPLETE, pp::CLOSE_COMPLETE_TAG),
            (be::NOTIFICATION_RESPONSE, pp::NOTIFICATION_RESPONSE_TAG),
            (be::COPY_DONE, pp::COPY_DONE_TAG),
            (be::COMMAND_COMPLETE, pp::COMMAND_COMPLETE_TAG),
            (be::COPY_DATA, pp::COPY_DATA_TAG),
            (be::DATA_ROW, pp::DATA_ROW_TAG),
            (be::ERROR_RESPONSE, pp::ERROR_RESPONSE_TAG),
            (be::COPY_IN_RESPONSE, pp::COPY_IN_RESPONSE_TAG),
            (be::COPY_OUT_RESPONSE, pp::COPY_OUT_RESPONSE_TAG),
            (be::EMPTY_QUERY_RESPONSE, pp::EMPTY_QUERY_RESPONSE_TAG),
            (be::BACKEND_KEY_DATA, pp::BACKEND_KEY_DATA_TAG),
            (be::NO_DATA, pp::NO_DATA_TAG),
            (be::NOTICE_RESPONSE, pp::NOTICE_RESPONSE_TAG),
            (be::AUTHENTICATION, pp::AUTHENTICATION_TAG),
            (be::PORTAL_SUSPENDED, pp::PORTAL_SUSPENDED_TAG),
            (be::PARAMETER_STATUS, pp::PARAMETER_STATUS_TAG),
            (be::PARAMETER_DESCRIPTION, pp::PARAMETER_DESCRIPTION_TAG),
            (be::ROW_DESCRIPTION, pp::ROW_DESCRIPTION_TAG),
            (be::READY_FOR_QUERY, pp::READY_FOR_QUERY_TAG),
        ];
        for (ours, theirs) in pairs {
            assert_eq!(ours, theirs, "{:?} vs {:?}", ours as char, theirs as char);
        }
    }
}

//! Diesel table definitions; they mirror `migrations/`.

diesel::table! {
    /// Countries a prospect can choose.
    countries (code) {
        /// ISO 3166-1 alpha-2 code, or "-".
        code -> Text,
        /// Display name.
        name -> Text,
    }
}

diesel::table! {
    /// Roles a prospect can choose.
    roles (code) {
        /// Short code, or "-".
        code -> Text,
        /// Display name.
        name -> Text,
    }
}

diesel::table! {
    /// One row per prospect; a tombstone (personal data NULL) once deleted.
    prospects (id) {
        /// The prospect id from the sign-up event.
        id -> Uuid,
        /// E-mail as typed; NULL once deleted.
        email -> Nullable<Text>,
        /// `lower(email)`, generated; unique among confirmed, live prospects.
        email_key -> Nullable<Text>,
        /// Given name.
        first_name -> Nullable<Text>,
        /// Family name.
        last_name -> Nullable<Text>,
        /// Company, when given.
        company_name -> Nullable<Text>,
        /// Country code.
        country_code -> Nullable<Text>,
        /// Role code.
        role_code -> Nullable<Text>,
        /// When the prospect signed up.
        signed_up_at -> Timestamptz,
        /// When the row last changed.
        updated_at -> Timestamptz,
        /// When the prospect asked to be forgotten.
        deleted_at -> Nullable<Timestamptz>,
        /// Stream sequence of the last event applied to the row.
        last_event_seq -> BigInt,
        /// When the owner of the address confirmed the sign-up; NULL while
        /// pending.
        confirmed_at -> Nullable<Timestamptz>,
        /// Links issued before this time open nothing (the record took
        /// another address, or its owner ended the older links); NULL: all.
        links_not_before -> Nullable<Timestamptz>,
        /// The privacy notice's version the sign-up agreed to; NULL when
        /// not recorded (a version 1 sign-up) or erased.
        consent_notice_version -> Nullable<Text>,
        /// When it was agreed to (NULL exactly when the version is).
        consent_agreed_at -> Nullable<Timestamptz>,
        /// The signing-up client's address, when the operator records it.
        consent_client_address -> Nullable<Text>,
        /// The signing-up browser's `User-Agent`, when recorded.
        consent_user_agent -> Nullable<Text>,
        /// The confirming client's address, when recorded.
        confirmed_client_address -> Nullable<Text>,
        /// The confirming browser's `User-Agent`, when recorded.
        confirmed_user_agent -> Nullable<Text>,
    }
}

diesel::table! {
    /// Events already applied, by `ce-id`.
    applied_events (event_id) {
        /// The event's `ce-id`.
        event_id -> Uuid,
        /// The prospect it was about.
        prospect_id -> Uuid,
        /// Its stream sequence.
        stream_seq -> BigInt,
        /// When it was applied.
        applied_at -> Timestamptz,
    }
}

diesel::table! {
    /// Prospect ids of sign-ups merged into the prospect that held their
    /// address, when its owner confirmed them.
    prospect_aliases (alias_id) {
        /// The merged sign-up's prospect id.
        alias_id -> Uuid,
        /// The prospect it was merged into.
        prospect_id -> Uuid,
    }
}

diesel::table! {
    /// E-mail changes waiting for their new address to be confirmed.
    pending_changes (prospect_id) {
        /// The prospect asking.
        prospect_id -> Uuid,
        /// The `ce-id` of the change request, named by its confirmation link.
        request_id -> Uuid,
        /// The new address.
        email -> Text,
        /// Given name to apply.
        first_name -> Text,
        /// Family name to apply.
        last_name -> Text,
        /// Company to apply.
        company_name -> Nullable<Text>,
        /// Country code to apply.
        country_code -> Text,
        /// Role code to apply.
        role_code -> Text,
        /// When it was asked for.
        requested_at -> Timestamptz,
        /// The request's stream sequence.
        request_seq -> BigInt,
    }
}

diesel::joinable!(prospect_aliases -> prospects (prospect_id));
diesel::joinable!(pending_changes -> prospects (prospect_id));
diesel::allow_tables_to_appear_in_same_query!(prospects, prospect_aliases, pending_changes, countries, roles);

diesel::table! {
    /// The event stream the database was built from (one row).
    stream_origin (one) {
        /// Always true: there is one row.
        one -> Bool,
        /// `bus::stream::identity` of the stream.
        identity -> Text,
        /// When it was recorded.
        recorded_at -> Timestamptz,
    }
}

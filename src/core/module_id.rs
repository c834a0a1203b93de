//! The names of the gateway's modules (product.md, Names): who owns a record, a timer, a
//! dialog. A vocabulary only: the engine is the one place that builds the modules.

/// The modules of the gateway (product.md, Names). Persisted as [`ModuleId::as_str`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ModuleId {
    Admin,
    Bridge,
    PresenceAgent,
    Usrloc,
    Bla,
    Dialoginfo,
    Registrar,
}

impl ModuleId {
    pub const ALL: [ModuleId; 7] = [
        ModuleId::Admin,
        ModuleId::Bridge,
        ModuleId::PresenceAgent,
        ModuleId::Usrloc,
        ModuleId::Bla,
        ModuleId::Dialoginfo,
        ModuleId::Registrar,
    ];

    /// The config section / store owner name.
    pub fn as_str(self) -> &'static str {
        match self {
            ModuleId::Admin => "admin",
            ModuleId::Bridge => "bridge",
            ModuleId::PresenceAgent => "presence_agent",
            ModuleId::Usrloc => "usrloc",
            ModuleId::Bla => "bla",
            ModuleId::Dialoginfo => "dialoginfo",
            ModuleId::Registrar => "registrar",
        }
    }

    pub fn parse(s: &str) -> Option<ModuleId> {
        ModuleId::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

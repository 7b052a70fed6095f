//! The claim's walk over tenants, once for both backends: where each lookup
//! starts, going round past the last tenant, passing over tenants without
//! room, and when to stop. Each backend only answers "the next tenant with
//! unfinished mail after this one" and "has it anything due".

use crate::model::ClaimRequest;
use crate::rows::id;
use crate::{CLAIM_WALK, Result};

/// One claim's walk, from the tenant after `start` round to `start` itself.
pub(crate) struct TenantWalk<'a> {
    req: &'a ClaimRequest,
    start: Option<String>,
    /// The next lookup asks for the first tenant after this one ("" = from the beginning).
    at: String,
    wrapped: bool,
    looked: usize,
    due: Vec<(String, u32)>,
    /// The last tenant looked at: where the next claim's walk starts.
    last: Option<String>,
    done: bool,
}

impl<'a> TenantWalk<'a> {
    pub(crate) fn new(req: &'a ClaimRequest, start: Option<String>) -> Self {
        TenantWalk {
            req,
            at: start.clone().unwrap_or_default(),
            wrapped: start.is_none(),
            last: start.clone(),
            start,
            looked: 0,
            due: Vec::new(),
            done: false,
        }
    }

    /// Where the next lookup starts (it wants the first tenant after this),
    /// or `None` once the walk is over: `limit` tenants with mail due, or
    /// [`CLAIM_WALK`] tenants looked at, or round to where it started.
    pub(crate) fn after(&self) -> Option<&str> {
        let over =
            self.done || self.due.len() >= self.req.limit as usize || self.looked >= CLAIM_WALK;
        (!over).then_some(self.at.as_str())
    }

    /// Takes what the lookup found after [`TenantWalk::after`]; answers the
    /// tenant's room when it is to be asked whether it has mail due (a
    /// tenant without room is passed over unasked).
    pub(crate) fn found(&mut self, tenant: Option<String>) -> Result<Option<(String, u32)>> {
        let tenant = match tenant {
            // Round again: up to and including where this claim started.
            Some(t) if self.wrapped && self.start.as_ref().is_some_and(|s| &t > s) => {
                self.done = true;
                return Ok(None);
            }
            Some(t) => t,
            None if self.wrapped => {
                self.done = true;
                return Ok(None);
            }
            None => {
                self.wrapped = true;
                self.at.clear();
                return Ok(None);
            }
        };
        self.at.clone_from(&tenant);
        self.last = Some(tenant.clone());
        let room = self.req.room_of(id(tenant.clone())?);
        if room == 0 {
            return Ok(None);
        }
        self.looked += 1;
        Ok(Some((tenant, room)))
    }

    /// Notes a tenant [`TenantWalk::found`] asked about as having mail due.
    pub(crate) fn due(&mut self, tenant: String, room: u32) {
        self.due.push((tenant, room));
    }

    /// The tenants to serve with their rooms, in order, and the last tenant
    /// looked at: where the next claim's walk starts.
    pub(crate) fn finish(self) -> (Vec<(String, u32)>, Option<String>) {
        (self.due, self.last)
    }
}

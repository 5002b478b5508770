//! The attack suite: one module per surface an attacker reaches (tokens, canonical forms, the
//! reverse proxy, the edge of the server, what one agent may consume or touch). Every test is an
//! attack that once worked or could work, tried the way an attacker would, and the answer a
//! governance gateway must give: refused, denied, bounded, and nothing changed.

mod accounting;
mod canonical;
mod edge;
mod proxy;
mod tokens;

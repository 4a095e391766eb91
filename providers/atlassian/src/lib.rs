//! atlassian

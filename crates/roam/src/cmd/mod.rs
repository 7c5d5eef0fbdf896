pub mod checkpoint;
pub mod kill;
pub mod mode;
pub mod nodes;
pub mod ps;
pub mod restore;
pub mod run;

drop table if exists purchases;
drop table if exists accounts;
drop table if exists orders;
drop table if exists users;
create table users (id bigint primary key, name text not null, email text);
create table orders (id bigint not null, user_id bigint not null, amount numeric(12,2) not null,
                     status text not null default 'new', primary key (user_id, id));
-- The tutorial's ORM schema: serial keys left to the database (pgshard generates them).
create table accounts (id serial primary key, name text not null);
create table purchases (id serial, account_id integer not null, amount numeric(12,2) not null,
                        primary key (account_id, id));
